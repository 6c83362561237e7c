"""Candidate pairs for the hub's dedup: identities sharing a blocking key, found by the database.

Owns the set-based pair generation: a self-join of ``blocking_key`` on ``key``, both sides
active, each unordered pair once (smaller pk first), with the number of keys it shares.  A
key value whose bucket holds more than ``cap`` identities is not used: a name as common as
"Mamadou Diallo" in a big region would pair everyone with everyone, and the narrower keys
stored for the same people carry the blocking instead.  The cap is checked per key with an
index probe that stops after ``cap + 1`` rows, so a huge bucket costs no more than a small one.

Registration also reads, for a query, keys its record does not store: birth year +-1, day
and month swapped, first and last names crossed over.  ``neighbour_pairs`` adds the pairs
only those find: the keys are derived in Python for a slice, the holders read per key.

The same SQL runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from .matching import Person, index_keys, query_keys
from .storage import schema as t

__all__ = ["neighbour_pairs", "pairs_in_range", "pairs_touching"]

_CHUNK = 900  # stays under every SQLite's limit of bound parameters


def _pairs(side: Callable[[ColumnElement[int]], ColumnElement[bool]], cap: int, *, upward: bool) -> sa.Select[int, int, int]:
    """(a, b, shared keys) for the a that ``side(pk column)`` selects, both identities active.

    ``upward``: only b > a (a sweep slice, where every pair is met from its smaller pk);
    otherwise every b other than a (the caller folds the pairs met from both ends).
    """
    ak, bk, wide = t.blocking_key.alias("ak"), t.blocking_key.alias("bk"), t.blocking_key.alias("wide")
    ia, ib = t.identity.alias("ia"), t.identity.alias("ib")
    # The (cap + 1)-th holder of the key exists: the bucket is too big to pair.
    too_big = sa.exists(sa.select(sa.literal(1)).select_from(wide).where(wide.c.key == ak.c.key).offset(cap))
    other = bk.c.identity_pk > ak.c.identity_pk if upward else bk.c.identity_pk != ak.c.identity_pk
    return (
        sa.select(ak.c.identity_pk, bk.c.identity_pk, sa.func.count().label("shared"))
        .select_from(
            ak.join(ia, ia.c.pk == ak.c.identity_pk)
            .join(bk, sa.and_(bk.c.key == ak.c.key, other))
            .join(ib, ib.c.pk == bk.c.identity_pk)
        )
        .where(side(ak.c.identity_pk), side(ia.c.pk), ia.c.status == "active", ib.c.status == "active", ~too_big)
        .group_by(ak.c.identity_pk, bk.c.identity_pk)
    )


async def pairs_in_range(conn: AsyncConnection, lo: int, hi: int, cap: int) -> dict[tuple[int, int], int]:
    """{(a, b): shared keys} for a in [lo, hi] and any b > a: a sweep slice.

    Slices that tile the pk range meet every pair exactly once, in the slice of its smaller pk.
    """
    query = _pairs(lambda pk: pk.between(lo, hi), cap, upward=True)
    return {(a, b): n for a, b, n in await conn.execute(query)}


def _chunks(values: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


async def pairs_touching(conn: AsyncConnection, pks: Sequence[int], cap: int) -> dict[tuple[int, int], int]:
    """{(a, b): shared keys}, a < b, for every pair with at least one side in ``pks``."""
    found: dict[tuple[int, int], int] = {}
    for chunk in _chunks(sorted(set(pks))):
        query = _pairs(lambda pk: pk.in_(chunk), cap, upward=False)  # noqa: B023 (used at once)
        for a, b, n in await conn.execute(query):
            # A pair with both sides in ``pks`` is met from each end: keep it once.
            found[(a, b) if a < b else (b, a)] = n
    return found


async def neighbour_pairs(
    conn: AsyncConnection, people: Mapping[int, Person], cap: int, *, upward: bool
) -> dict[tuple[int, int], int]:
    """{(a, b): keys}, a < b, met through a neighbour key of someone in ``people``.

    ``upward``: only partners above the asking pk, as in a sweep slice (the neighbours are
    symmetric: a year +1 seen from one side is a year -1 from the other, met in the slice of
    the smaller pk).
    """
    asking: dict[int, list[int]] = defaultdict(list)
    for pk, person in people.items():
        stored = set(index_keys(person))
        for key in query_keys(person):
            if key not in stored:
                asking[key].append(pk)
    bk, ib = t.blocking_key, t.identity
    found: dict[tuple[int, int], int] = {}
    for chunk in _chunks(sorted(asking)):
        small = sa.select(bk.c.key).where(bk.c.key.in_(chunk)).group_by(bk.c.key).having(sa.func.count() <= cap)
        holders = await conn.execute(
            sa.select(bk.c.key, bk.c.identity_pk)
            .join(ib, ib.c.pk == bk.c.identity_pk)
            .where(bk.c.key.in_(small), ib.c.status == "active")
        )
        for key, b in holders:
            for a in asking[key]:
                if a != b and (b > a or not upward):
                    pair = (a, b) if a < b else (b, a)
                    found[pair] = found.get(pair, 0) + 1
    return found
