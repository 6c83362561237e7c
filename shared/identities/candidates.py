"""Candidate generation: which stored identities a query is scored against.

ONE code path for register, ``/mpi/match``, FHIR and bulk import (a batch of rows at once),
on both dialects:

1. every query key (``matching.blocking.query_keys``) is looked up in ``blocking_key``; a
   bucket of more than ``BUCKET_CAP`` identities is skipped (one index probe: is there an
   entry past the cap?): a key value too common to tell people apart says nothing, and the
   narrower keys stored for the same people (a region, a year, a date) take over;
2. each identity sharing keys with the query is pre-scored by the rarity of what it shares
   (``weight``: the sum of 1 / bucket size), and only the ``limit`` best are read, so a
   common name never pushes out the identity that shares a rare key;
3. identities sharing an external identifier with the query are added (decisive evidence);
4. the identity rows are read (active ones only), with external ids when the query has some.

One query is one statement, ranked and cut in the database; a batch reads the small buckets
of all its keys in one statement and sums the same weights in Python.
"""

from __future__ import annotations

import functools
import heapq
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..matching import Person, person_of, query_keys
from ..matching.blocking import BUCKET_CAP
from ..storage import schema as t
from .fields import Row
from .lookup import external_ids_of, id_list, id_param, pk_in

__all__ = ["best_by_keys", "candidates", "weight"]

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
    """The query's keys as a table with one column, ``value`` (bound at execution as ``keys_<position>``)."""
    return id_list(dialect, f"keys_{position}")


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


def _small_buckets(dialect: str) -> Any:
    """The query keys (``keys_0``) whose bucket holds at most the cap: one index probe each."""
    bk = t.blocking_key
    keys = _keys_of(dialect, 0)
    past_cap = sa.select(bk.c.identity_pk).where(bk.c.key == keys.c.value).limit(1).offset(BUCKET_CAP)
    return sa.select(keys.c.value.label("key")).where(~past_cap.exists()).subquery()


@functools.lru_cache(maxsize=4)
def _buckets(dialect: str) -> sa.Select[Any]:
    """(key, holders) of every small bucket among the keys of a whole batch, one row per key.

    The holders come folded into one value (a comma-separated string on SQLite, an array on
    PostgreSQL): a batch touches tens of thousands of buckets of up to a hundred holders,
    and one row per key costs a fraction of one row per holder.
    """
    bk = t.blocking_key
    small = _small_buckets(dialect)
    agg = sa.func.array_agg(bk.c.identity_pk) if dialect == "postgresql" else sa.func.group_concat(bk.c.identity_pk)
    return sa.select(bk.c.key, agg.label("holders")).join(small, small.c.key == bk.c.key).group_by(bk.c.key)


def _pks(holders: Any) -> list[int]:
    return holders if isinstance(holders, list) else [int(pk) for pk in holders.split(",")]


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
    conn: AsyncConnection,
    people: Sequence[Person],
    limit: int,
    keys: Sequence[list[int]] | None = None,
    *,
    after: Sequence[int] | None = None,
) -> list[list[tuple[Row, Person]]]:
    """For each person, up to ``limit`` active identities to score, most promising first.

    ``keys``: the people's ``query_keys`` when the caller has them already.  ``after``: for
    each person, only identities of a larger pk are candidates, and the best ``limit`` are
    taken among those (the hub's sweep, where people are stored identities: each pair is
    met once, from its smaller pk).
    """
    dialect = conn.dialect.name
    found: list[dict[int, tuple[float, Row]]] = [{} for _ in people]
    keyed = list(keys) if keys is not None else [query_keys(p) for p in people]
    if len(people) == 1 and after is None:
        # One statement: ranked and cut in the database, rows joined (register, match).
        params = {"keys_0": id_param(dialect, keyed[0])}
        for row in await conn.execute(_statement(dialect, 1, limit), params):
            found[0][row.pk] = (row.w, row)
    elif people:
        # A batch (import, dedup): the small buckets of all its keys in one statement, the
        # same weights summed here per query, then the chosen rows in one more.
        chosen = await best_by_keys(conn, keyed, limit, after)
        wanted = sorted({pk for best in chosen for _, pk in best})
        rows = await conn.execute(sa.select(t.identity).where(pk_in(conn, t.identity.c.pk, wanted), t.identity.c.status == "active"))
        by_pk: dict[int, Row] = {row.pk: row for row in rows}
        for i, best in enumerate(chosen):
            found[i] = {pk: (-w, by_pk[pk]) for w, pk in best if pk in by_pk}
    for i, sharing in (await _sharing_external_ids(conn, people)).items():
        for row in sharing:
            if after is not None and row.pk <= after[i]:
                continue
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


async def best_by_keys(
    conn: AsyncConnection, keyed: Sequence[list[int]], limit: int, after: Sequence[int] | None = None
) -> list[list[tuple[float, int]]]:
    """For each list of query keys, its ``limit`` best holders as (-weight, pk), best first.

    The small buckets of all the keys in one statement, the weights summed here per query
    (``after``: only holders of a larger pk).  Holders are not checked for being active.
    """
    dialect = conn.dialect.name
    every_key = sorted({k for own in keyed for k in own})
    buckets = {
        key: _pks(holders)
        for key, holders in await conn.execute(_buckets(dialect), {"keys_0": id_param(dialect, every_key)})
    }
    chosen: list[list[tuple[float, int]]] = []
    for i, own in enumerate(keyed):
        score: dict[int, float] = defaultdict(float)
        floor = after[i] if after is not None else 0
        for key in own:
            bucket = buckets.get(key, ())
            w = weight(len(bucket)) if bucket else 0.0
            for pk in bucket:
                if pk > floor:
                    score[pk] += w
        chosen.append(heapq.nsmallest(limit, ((-w, pk) for pk, w in score.items())))
    return chosen


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
