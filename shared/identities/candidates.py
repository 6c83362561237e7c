"""Candidate generation: which stored identities a query is scored against.

ONE code path for register, ``/mpi/match``, bulk import (a batch of rows at once) and the
hub's incremental dedup, on both dialects:

1. every query key (``matching.blocking.query_keys``) is looked up in ``blocking_key`` in one
   statement, which counts each key's bucket in the index and reads only the buckets of at
   most ``BUCKET_CAP`` identities: a key value too common to tell people apart is skipped,
   and the narrower keys stored for the same people take over;
2. identities sharing an external identifier with the query are added (decisive evidence);
3. each query's candidates are pre-scored by the rarity of what they share (``prescore``,
   an external id outweighing any number of keys) and cut to
   ``limit`` best, so a common name never pushes out the identity that shares a rare key;
4. the identity rows are read (active ones only), with external ids when the query has some.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..matching import Person, person_of, query_keys
from ..matching.blocking import BUCKET_CAP
from ..storage import schema as t
from .fields import Row
from .lookup import external_ids_of

__all__ = ["candidates", "prescore"]

_CHUNK = 900  # stays under every SQLite's limit of bound parameters
_EXTERNAL_WEIGHT = 100.0  # a shared external id outweighs any number of shared keys


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _holders_query(keys: Sequence[int]) -> sa.Select[Any]:
    bk = t.blocking_key
    sizes = (
        sa.select(bk.c.key, sa.func.count().label("n"))
        .where(bk.c.key.in_(keys))
        .group_by(bk.c.key)
        .having(sa.func.count() <= BUCKET_CAP)
        .subquery()
    )
    return sa.select(bk.c.key, bk.c.identity_pk, sizes.c.n).join(sizes, sizes.c.key == bk.c.key)


def prescore(keys: Sequence[int], holders: dict[int, list[int]], sizes: dict[int, int]) -> dict[int, float]:
    """Identity pk -> sum over the keys it shares with the query of log2(2 * cap / bucket size).

    A key held by one identity weighs about 8 bits, one held by the cap's worth weighs 1: two
    rare keys outweigh any number of common ones, and more shared keys outweigh fewer.
    """
    score: dict[int, float] = defaultdict(float)
    for key in keys:
        pks = holders.get(key)
        if pks:
            weight = math.log2(2 * BUCKET_CAP / sizes[key])
            for pk in pks:
                score[pk] += weight
    return score


async def candidates(
    conn: AsyncConnection, people: Sequence[Person], limit: int
) -> list[list[tuple[Row, Person]]]:
    """For each person, up to ``limit`` active identities to score, most promising first."""
    keys_of = [query_keys(p) for p in people]
    holders: dict[int, list[int]] = defaultdict(list)
    sizes: dict[int, int] = {}
    for chunk in _chunks(sorted({k for keys in keys_of for k in keys})):
        for key, pk, n in await conn.execute(_holders_query(chunk)):
            holders[key].append(pk)
            sizes[key] = n
    by_external = await _sharing_external_ids(conn, people)
    wanted: list[list[int]] = []
    for i, keys in enumerate(keys_of):
        score = prescore(keys, holders, sizes)
        for pk in by_external.get(i, ()):
            score[pk] += _EXTERNAL_WEIGHT
        wanted.append(sorted(score, key=lambda pk: (-score[pk], pk))[:limit])
    by_pk: dict[int, Row] = {}
    for chunk in _chunks(sorted({pk for pks in wanted for pk in pks})):
        rows = await conn.execute(
            sa.select(t.identity).where(t.identity.c.pk.in_(chunk), t.identity.c.status == "active")
        )
        by_pk.update({row.pk: row for row in rows})
    external: dict[int, dict[str, str]] = {}
    if any(p.external_ids for p in people) and by_pk:
        # A missing external id is neutral evidence: read the candidates' ids only when the query has one.
        external = await external_ids_of(conn, list(by_pk))
    return [
        [(by_pk[pk], person_of(by_pk[pk], external.get(pk))) for pk in pks if pk in by_pk] for pks in wanted
    ]


async def _sharing_external_ids(conn: AsyncConnection, people: Sequence[Person]) -> dict[int, list[int]]:
    """Query position -> identity pks holding one of its external ids."""
    wanted: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(people):
        for system, value in p.external_ids.items():
            if value:
                wanted[(system, value)].append(i)
    found: dict[int, list[int]] = defaultdict(list)
    for chunk in _chunks(sorted(wanted)):
        ext = t.external_id
        rows = await conn.execute(
            sa.select(ext.c.system, ext.c.value, ext.c.identity_pk).where(
                sa.tuple_(ext.c.system, ext.c.value).in_(list(chunk))
            )
        )
        for system, value, pk in rows:
            for i in wanted[(system, value)]:
                found[i].append(pk)
    return found
