"""Candidate generation: which stored identities a query is scored against.

ONE code path for register, ``/mpi/match``, bulk import (a batch of rows at once) and the
hub's incremental dedup, on both dialects, and one statement for up to ``_PER_STATEMENT``
queries:

1. every query key (``matching.blocking.query_keys``) is looked up in ``blocking_key``; each
   key's bucket is counted in the index, and a bucket of more than ``BUCKET_CAP`` identities
   is skipped: a key value too common to tell people apart says nothing, and the narrower
   keys stored for the same people (with a region, a year, a date) take over;
2. each identity sharing keys with the query is pre-scored by the rarity of what it shares
   (``weight``: the sum of 1 / bucket size), and only the ``limit`` best are read, so a
   common name never pushes out the identity that shares a rare key;
3. identities sharing an external identifier with the query are added (decisive evidence);
4. the identity rows come back in the same statement (active ones only), with external ids
   when the query has some.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from ..matching import Person, person_of, query_keys
from ..matching.blocking import BUCKET_CAP
from ..storage import schema as t
from .fields import Row
from .lookup import external_ids_of

__all__ = ["candidates", "weight"]

_PER_STATEMENT = 50  # queries ranked in one statement (a UNION ALL of one branch each)
_CHUNK = 900  # stays under every SQLite's limit of bound parameters
_EXTERNAL_WEIGHT = 100.0  # a shared external id outweighs any number of shared keys


def weight(bucket_size: int) -> float:
    """What sharing one key is worth: 1 for a key held by one identity, 1/100 at the cap.

    Two rare keys outweigh any number of common ones; among equals, more shared keys win.
    The database computes the same sum (``_ranked``); benchmarks without a database use this.
    """
    return 1.0 / bucket_size


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _keys_of(dialect: str, position: int) -> Any:
    """The query's keys as a table with one column, ``value``: a JSON array on SQLite, an array on PostgreSQL."""
    name = f"keys_{position}"
    if dialect == "postgresql":
        array = sa.cast(sa.bindparam(name), postgresql.ARRAY(sa.BigInteger))
        return sa.func.unnest(array).table_valued("value").render_derived()
    return sa.func.json_each(sa.bindparam(name, type_=sa.String)).table_valued("value")


def _ranked(dialect: str, position: int, limit: int) -> sa.Select[Any]:
    """The ``limit`` best identities for the query at ``position``: (position, identity_pk, weight).

    Whether a bucket is over the cap is one probe of the index (is there an entry past the
    cap?), so a key held by a hundred thousand people costs no more than one held by ten.
    """
    bk = t.blocking_key
    keys = _keys_of(dialect, position)
    past_cap = sa.select(bk.c.identity_pk).where(bk.c.key == keys.c.value).limit(1).offset(BUCKET_CAP)
    small = sa.select(keys.c.value.label("key")).where(~past_cap.exists()).subquery()
    holders = (
        sa.select(bk.c.identity_pk, sa.func.count().over(partition_by=bk.c.key).label("n"))
        .join(small, small.c.key == bk.c.key)
        .subquery()
    )
    score = sa.func.sum(sa.literal(1.0, sa.Float) / holders.c.n).label("w")
    best = (
        sa.select(holders.c.identity_pk, score)
        .group_by(holders.c.identity_pk)
        .order_by(score.desc(), holders.c.identity_pk)
        .limit(limit)
        .subquery()
    )
    return sa.select(sa.literal(position).label("position"), best.c.identity_pk, best.c.w)


@functools.lru_cache(maxsize=64)
def _statement(dialect: str, count: int, limit: int) -> sa.Select[Any]:
    """Built once per shape: building a statement of nested subqueries costs milliseconds."""
    branches = [_ranked(dialect, i, limit) for i in range(count)]
    ranked = (branches[0] if count == 1 else sa.union_all(*branches)).subquery()
    return (
        sa.select(ranked.c.position, ranked.c.w, t.identity)
        .join(t.identity, t.identity.c.pk == ranked.c.identity_pk)
        .where(t.identity.c.status == "active")
    )


async def candidates(
    conn: AsyncConnection, people: Sequence[Person], limit: int
) -> list[list[tuple[Row, Person]]]:
    """For each person, up to ``limit`` active identities to score, most promising first."""
    found: list[dict[int, tuple[float, Row]]] = [{} for _ in people]
    for start in range(0, len(people), _PER_STATEMENT):
        group = people[start : start + _PER_STATEMENT]
        dialect = conn.dialect.name
        keyed = [query_keys(p) for p in group]
        params = {f"keys_{i}": keys if dialect == "postgresql" else json.dumps(keys) for i, keys in enumerate(keyed)}
        for row in await conn.execute(_statement(dialect, len(group), limit), params):
            found[start + row.position][row.pk] = (row.w, row)
    for i, sharing in (await _sharing_external_ids(conn, people)).items():
        for row in sharing:
            w = found[i].get(row.pk, (0.0, row))[0]
            found[i][row.pk] = (w + _EXTERNAL_WEIGHT, row)
    external: dict[int, dict[str, str]] = {}
    if any(p.external_ids for p in people):
        # A missing external id is neutral evidence: read the candidates' ids only when the query has one.
        external = await external_ids_of(conn, sorted({pk for scored in found for pk in scored}))
    out = []
    for scored in found:
        ordered = sorted(scored.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
        out.append([(row, person_of(row, external.get(pk))) for pk, (_, row) in ordered])
    return out


async def _sharing_external_ids(conn: AsyncConnection, people: Sequence[Person]) -> dict[int, list[Row]]:
    """Query position -> active identities holding one of its external ids."""
    wanted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(people):
        for system, value in p.external_ids.items():
            if value:
                wanted[(system, value)].append(i)
    found: dict[int, list[Row]] = defaultdict(list)
    ext = t.external_id
    for chunk in _chunks(sorted(wanted), _CHUNK // 2):
        rows = await conn.execute(
            sa.select(ext.c.system, ext.c.value, t.identity)
            .join(t.identity, t.identity.c.pk == ext.c.identity_pk)
            .where(sa.tuple_(ext.c.system, ext.c.value).in_(list(chunk)), t.identity.c.status == "active")
        )
        for row in rows:
            for i in wanted[(row.system, row.value)]:
                found[i].append(row)
    return found
