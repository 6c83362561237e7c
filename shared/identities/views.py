"""What an identity looks like from outside: the API's view, and the snapshot sync sends."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..storage import schema as t
from .fields import DEMOGRAPHIC, Found, api_time, clocks_of, iso, wire_value
from .lookup import row_by_pk

__all__ = ["snapshot", "view"]


def view(found: Found) -> dict[str, Any]:
    """The full identity, in the shape of GET /mpi/{mpi_id}; ``found`` comes from ``find_whole``."""
    row = found.row
    body: dict[str, Any] = {
        "mpi_id": row.mpi_id,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "date_of_birth": iso(row.date_of_birth),
        "gender": row.gender,
        "region_code": row.region_code,
        "country_code": row.country_code,
        "phone_number": row.phone_number,
        "programmes": [{"programme_type": p, "linked_at": api_time(at)} for p, at in found.programmes],
        "external_ids": dict(found.external_ids),
        "status": row.status,
        "created_at": api_time(row.created_at),
        "updated_at": api_time(row.updated_at),
    }
    if found.merged_from:
        body["merged_from"] = found.merged_from
    return body


async def snapshot(conn: AsyncConnection, pk: int) -> dict[str, Any]:
    """The whole identity with its clocks, for a replica that does not hold it yet (``identity.snapshot``)."""
    row = await row_by_pk(conn, pk)
    programmes = await conn.execute(
        sa.select(t.programme.c.programme_type, t.programme.c.linked_at).where(t.programme.c.identity_pk == pk)
    )
    external = await conn.execute(
        sa.select(t.external_id.c.system, t.external_id.c.value).where(t.external_id.c.identity_pk == pk)
    )
    c = t.card.c
    cards = await conn.execute(
        sa.select(c.card_code, c.campaign_id, c.programme_type, c.token_hash, c.status, c.issued_at).where(c.identity_pk == pk)
    )
    return {
        **{f: wire_value(getattr(row, f)) for f in DEMOGRAPHIC},
        "created_at": row.created_at,
        "clocks": clocks_of(row),
        "programmes": {p: at for p, at in programmes},
        "external_ids": {s: v for s, v in external},
        "cards": [dict(r._mapping) for r in cards],
    }
