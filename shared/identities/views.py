"""What an identity looks like from outside: the API's view, and the snapshot sync sends.

``view`` is the one shape of an identity every face answers: ``GET /mpi/{id}`` natively, the
FHIR Patient (``shared.fhir.resources.patient`` maps it), one identity or a page of them
(``views_of``). A new identity field added here appears in every face at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..storage import schema as t
from ..storage.dialects import Dialect
from .family import resolve
from .fields import DEMOGRAPHIC, Found, Row, api_time, clocks_of, iso, related_list, wire_value
from .lookup import MERGE_CHAIN_LIMIT, find_whole, row_by_pk

__all__ = ["replaces_of", "snapshot", "view", "views_of", "whole"]


async def whole(conn: AsyncConnection, dialect: Dialect, mpi_id: str) -> Found:
    """``lookup.find_whole``, with the caregiver links resolved through merges: what ``view`` answers."""
    found = await find_whole(conn, dialect, mpi_id)
    (related,) = await resolve(conn, [found.row.related_persons])
    return replace(found, related=related)


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
        "date_of_birth_estimated": bool(row.date_of_birth_estimated),
        "related_persons": found.related if found.related is not None else related_list(row.related_persons),
        "programmes": [{"programme_type": p, "linked_at": api_time(at)} for p, at in found.programmes],
        "external_ids": dict(found.external_ids),
        "status": row.status,
        "created_at": api_time(row.created_at),
        "updated_at": api_time(row.updated_at),
    }
    if found.merged_from:
        body["merged_from"] = found.merged_from
    return body


async def views_of(conn: AsyncConnection, rows: Sequence[Row]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """``view`` of each of these identity rows (as stored: merges not followed), and ``replaces_of`` them.

    One UNION ALL reads the rows' external ids, programmes and merge links; only identities
    with merge links (rare) cost the queries of ``replaces_of`` more.
    """
    if not rows:
        return [], {}
    pks = [r.pk for r in rows]
    mpi_ids = [r.mpi_id for r in rows]
    x, p, ml = t.external_id, t.programme, t.merge_link
    text = sa.String(40)
    extras = sa.union_all(
        sa.select(sa.literal("x"), sa.cast(x.c.identity_pk, text), x.c.system, x.c.value).where(
            x.c.identity_pk.in_(pks)
        ),
        sa.select(sa.literal("p"), sa.cast(p.c.identity_pk, text), p.c.programme_type, p.c.linked_at).where(
            p.c.identity_pk.in_(pks)
        ),
        sa.select(sa.literal("m"), ml.c.source, ml.c.target, ml.c.target).where(
            sa.or_(ml.c.source.in_(mpi_ids), ml.c.target.in_(mpi_ids))
        ),
    )
    external: dict[int, dict[str, str]] = {pk: {} for pk in pks}
    programmes: dict[int, list[tuple[str, str]]] = {pk: [] for pk in pks}
    linked = False
    for kind, key, a, b in await conn.execute(extras):
        if kind == "x":
            external[int(key)][a] = b
        elif kind == "p":
            programmes[int(key)].append((a, b))
        else:
            linked = True
    related = await resolve(conn, [r.related_persons for r in rows])
    views = [
        view(Found(r, r.mpi_id, sorted(programmes[r.pk], key=lambda e: (e[1], e[0])), external[r.pk], links))
        for r, links in zip(rows, related, strict=True)
    ]
    return views, (await replaces_of(conn, mpi_ids) if linked else {})


async def replaces_of(conn: AsyncConnection, mpi_ids: Sequence[str]) -> dict[str, list[str]]:
    """{ID: every ID merged into it, directly or through another merged ID}, for those that have any.

    Merge groups are found through ``merge_link`` (what sync settles groups from; indexed
    both ways), then their identity rows by ID: ``identity.merged_into`` alone is no good
    for this on SQLite, where ANALYZE sees a column of NULLs and scans the whole table.
    """
    ml = t.merge_link
    seen = set(mpi_ids)
    frontier = list(mpi_ids)
    for _ in range(MERGE_CHAIN_LIMIT):
        if not frontier:
            break
        links = await conn.execute(
            sa.select(ml.c.source, ml.c.target).where(sa.or_(ml.c.source.in_(frontier), ml.c.target.in_(frontier)))
        )
        frontier = sorted({end for link in links for end in link} - seen)
        seen.update(frontier)
    if len(seen) == len(set(mpi_ids)):
        return {}
    i = t.identity
    rows = (
        await conn.execute(
            sa.select(i.c.mpi_id, i.c.merged_into).where(i.c.mpi_id.in_(sorted(seen))).order_by(i.c.merged_at, i.c.mpi_id)
        )
    ).all()
    children: dict[str, list[str]] = {}
    for mpi_id, into in rows:
        if into is not None:
            children.setdefault(into, []).append(mpi_id)
    out: dict[str, list[str]] = {}
    for wanted in mpi_ids:
        below: list[str] = []
        todo = list(children.get(wanted, []))
        while todo and len(below) < MERGE_CHAIN_LIMIT * MERGE_CHAIN_LIMIT:
            current = todo.pop(0)
            if current in below or current == wanted:
                continue
            below.append(current)
            todo.extend(children.get(current, []))
        if below:
            out[wanted] = below
    return out


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
