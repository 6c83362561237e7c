"""Searching identities by name, ID, region, birth date and programme: one statement per page.

Search semantics: every word of ``q`` is a whole word of the name, but the last, which may
be the beginning of one (what a clerk types: ``fatou dia``). One word is a prefix range of
words. Two or more: the pair (rarest whole word, last word) is one prefix range of pair
tokens (``index.search_tokens``), and each other word one index probe.
"""

from __future__ import annotations

import functools
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

__all__ = ["name_terms", "search"]


def name_terms(q: str, frequencies: NameFrequencies) -> tuple[str, str, list[str]] | None:
    """The index reads the words of ``q`` make: (low, high) of one prefix range, and whole words to probe."""
    words = list(dict.fromkeys(name_tokens(q)))
    if not words:
        return None

    def share(token: str) -> float:  # how common a word is (0 for unknown: assumed rare)
        return max(frequencies.first_name_share(token), frequencies.last_name_share(token))

    if len(words) == 1:
        low = words[0][:60]
        probes: list[str] = []
    else:
        *whole, last = words
        anchor = min(whole, key=lambda w: (share(w), -len(w)))
        low = f"{PAIR}{anchor} {last}"[:60]
        probes = [w[:60] for w in whole if w != anchor]
    return low, low[:-1] + chr(ord(low[-1]) + 1), probes


@functools.cache
def _statement(probes: int, by_pk: bool, region: bool, dob: bool, program: bool, named: bool) -> sa.Select[Any]:
    """The search statement of one shape (which filters, how many words), built once; values are parameters."""
    i, p, nt = t.identity, t.programme, t.name_token
    conditions: list[Any] = [i.c.status == "active"]
    if by_pk:
        conditions.append(i.c.pk == sa.bindparam("pk"))
    if named:
        conditions.append(
            i.c.pk.in_(sa.select(nt.c.identity_pk).where(nt.c.token >= sa.bindparam("low"), nt.c.token < sa.bindparam("high")))
        )
    for n in range(probes):
        probe = t.name_token.alias(f"nt{n}")
        conditions.append(sa.exists().where(probe.c.identity_pk == i.c.pk, probe.c.token == sa.bindparam(f"w{n}")))
    if region:
        conditions.append(i.c.region_code == sa.bindparam("region"))
    if dob:
        conditions.append(i.c.date_of_birth == sa.bindparam("dob", type_=sa.Date))
    if program:
        conditions.append(i.c.pk.in_(sa.select(p.c.identity_pk).where(p.c.programme_type == sa.bindparam("program"))))
    count = sa.select(sa.func.count()).select_from(p).where(p.c.identity_pk == i.c.pk).scalar_subquery()
    columns = [i.c.mpi_id, i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.gender, i.c.region_code, i.c.created_at]
    return (
        sa.select(*columns, count.label("programme_count"), sa.func.count().over().label("total"))
        .where(*conditions)
        .order_by(i.c.last_name, i.c.first_name, i.c.pk)
        .limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=False))
        .offset(sa.bindparam("offset", type_=sa.Integer, literal_execute=False))
    )


async def search(conn: AsyncConnection, frequencies: NameFrequencies, query: SearchQuery) -> dict[str, Any]:
    """GET /mpi/search's answer: ``{"total", "items"}``."""
    params: dict[str, Any] = {
        "limit": query.limit, "offset": query.offset, "region": query.region_code, "dob": query.date_of_birth,
        "program": query.program,
    }
    if query.mpi_id:
        try:
            params["pk"] = (await find(conn, query.mpi_id)).row.pk
        except NotFound:
            return {"total": 0, "items": []}
    terms = name_terms(query.q or "", frequencies)
    if terms is not None:
        params["low"], params["high"], words = terms
        params.update({f"w{n}": w for n, w in enumerate(words)})
    statement = _statement(
        len(terms[2]) if terms else 0, bool(query.mpi_id), bool(query.region_code), bool(query.date_of_birth),
        bool(query.program), terms is not None,
    )
    rows = (await conn.execute(statement, params)).all()
    if rows:
        total = rows[0].total
    elif query.offset == 0:
        total = 0
    else:  # past the last page: the window had no row to count on
        counted = sa.select(sa.func.count()).select_from(statement.limit(None).offset(None).subquery())
        total = (await conn.execute(counted, params)).scalar_one()
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
