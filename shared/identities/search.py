"""Searching identities by name, ID, region, birth date and programme: one statement per page.

Search semantics: every word of ``q`` is a whole word of the name, but the last, which may
be the beginning of one (what a clerk types: ``fatou dia``). One word is a prefix range of
words. Two or more: the pair (rarest whole word, last word) is one prefix range of pair
tokens (``index.search_tokens``), and each other word one index probe.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import NotFound
from ..matching import NameFrequencies, name_tokens
from ..schemas import SearchQuery
from ..storage import schema as t
from .fields import api_time, iso
from .index import PAIR
from .lookup import find

__all__ = ["name_conditions", "search"]


def name_conditions(q: str, frequencies: NameFrequencies) -> list[Any]:
    """The conditions on ``identity`` that the words of ``q`` make."""
    words = list(dict.fromkeys(name_tokens(q)))
    if not words:
        return []
    i, nt = t.identity, t.name_token

    def prefix(value: str) -> tuple[Any, Any]:
        return nt.c.token >= value, nt.c.token < value[:-1] + chr(ord(value[-1]) + 1)

    def share(token: str) -> float:  # how common a word is (0 for unknown: assumed rare)
        return max(frequencies.first_name_share(token), frequencies.last_name_share(token))

    if len(words) == 1:
        return [i.c.pk.in_(sa.select(nt.c.identity_pk).where(*prefix(words[0][:60])))]
    *whole, last = words
    anchor = min(whole, key=lambda w: (share(w), -len(w)))
    conditions: list[Any] = [i.c.pk.in_(sa.select(nt.c.identity_pk).where(*prefix(f"{PAIR}{anchor} {last}"[:60])))]
    for n, word in enumerate(w for w in whole if w != anchor):
        probe = t.name_token.alias(f"nt{n}")
        conditions.append(sa.exists().where(probe.c.identity_pk == i.c.pk, probe.c.token == word[:60]))
    return conditions


async def search(conn: AsyncConnection, frequencies: NameFrequencies, query: SearchQuery) -> dict[str, Any]:
    """GET /mpi/search's answer: ``{"total", "items"}``."""
    i, p = t.identity, t.programme
    conditions: list[Any] = [i.c.status == "active"]
    if query.mpi_id:
        try:
            found = await find(conn, query.mpi_id)
        except NotFound:
            return {"total": 0, "items": []}
        conditions.append(i.c.pk == found.row.pk)
    conditions.extend(name_conditions(query.q or "", frequencies))
    if query.region_code:
        conditions.append(i.c.region_code == query.region_code)
    if query.date_of_birth:
        conditions.append(i.c.date_of_birth == query.date_of_birth)
    if query.program:
        conditions.append(i.c.pk.in_(sa.select(p.c.identity_pk).where(p.c.programme_type == query.program)))
    count = sa.select(sa.func.count()).select_from(p).where(p.c.identity_pk == i.c.pk).scalar_subquery()
    columns = [i.c.mpi_id, i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.gender, i.c.region_code, i.c.created_at]
    rows = (
        await conn.execute(
            sa.select(*columns, count.label("programme_count"), sa.func.count().over().label("total"))
            .where(*conditions)
            .order_by(i.c.last_name, i.c.first_name, i.c.pk)
            .limit(query.limit)
            .offset(query.offset)
        )
    ).all()
    if rows:
        total = rows[0].total
    elif query.offset == 0:
        total = 0
    else:  # past the last page: the window had no row to count on
        total = (await conn.execute(sa.select(sa.func.count()).select_from(i).where(*conditions))).scalar_one()
    items = [
        {
            "mpi_id": r.mpi_id,
            "first_name": r.first_name,
            "last_name": r.last_name,
            "date_of_birth": iso(r.date_of_birth),
            "gender": r.gender,
            "region_code": r.region_code,
            "programme_count": int(r.programme_count),
            "created_at": api_time(r.created_at),
        }
        for r in rows
    ]
    return {"total": total, "items": items}
