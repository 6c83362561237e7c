"""The dedup's pairs, a batch of identities at once: partners ranked in the database, columns read once, scores in arrays.

1. **Partners.** Each asking identity's query keys (``blocking.query_keys``: names both
   ways round, birth year +-1, day and month swapped) go to the database as two arrays
   (asking pk, key); PostgreSQL skips the buckets over ``BUCKET_CAP``, sums the rarity of
   what each holder shares (1 / bucket size, as ``identities.candidates`` does) and keeps
   each asking identity's ``limit`` best holders with a window function: pks and weights
   come back, never rows.  SQLite sums the same weights in Python
   (``candidates.best_by_keys``).  ``upward`` (a sweep): partners among the larger pks
   only, so a pair is met once, from its smaller pk.
2. **Columns.** The matched columns of the batch and its partners (names, birth date, sex,
   region, phone, the campaign fields, external ids) are read in one statement each.
3. **Scores.** Every pair (a, b), a < b, is scored with a's other partners as its query set,
   the set's rows in b order: ``LearnedMatcher.score_pairs`` computes the features of all
   the batch's pairs in one matrix and runs the trees over all of it.  Two DHIS2 UIDs sink
   the score: such a pair is compared again without external ids (a person decides if the
   rest is probable), as before.

What comes out: the pairs at or above ``probable``, best first (score, then pks): the
order the decisions are taken in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..identities.candidates import best_by_keys
from ..identities.lookup import external_ids_of, pk_in
from ..matching import LearnedMatcher, Matcher, MatchResult, Person, person_of, query_keys
from ..matching.blocking import BUCKET_CAP
from ..storage import schema as t

__all__ = ["Batch", "Found", "Identity", "partners", "read_people", "score_batch"]

_EXTERNAL_WEIGHT = 100.0  # as identities.candidates: a shared external id (here: one's own) outweighs any keys

# The columns the matcher reads, and what a decision needs (which registration is older).
_COLUMNS = (
    t.identity.c.pk, t.identity.c.mpi_id, t.identity.c.created_at, t.identity.c.first_name, t.identity.c.last_name,
    t.identity.c.date_of_birth, t.identity.c.gender, t.identity.c.region_code, t.identity.c.phone_number,
    t.identity.c.date_of_birth_estimated, t.identity.c.related_persons,
)


@dataclass(frozen=True, slots=True)
class Found:
    """A pair at or above ``probable``: a < b (pks), with its score and evidence."""

    a: int
    b: int
    result: MatchResult


@dataclass(frozen=True, slots=True)
class Identity:
    """What a decision reads of an identity (which registration is older, its region)."""

    mpi_id: str
    created_at: str
    region_code: str


@dataclass
class Batch:
    """People of a batch: pk -> Person, and pk -> Identity."""

    people: dict[int, Person]
    meta: dict[int, Identity]


_RANKED_SQL = """
    WITH q AS (
        SELECT * FROM unnest(CAST(:qpk AS bigint[]), CAST(:qkey AS bigint[])) AS q(qpk, key)
    ), held AS (
        -- at most cap + 1 holders of each key (one index range): more says the bucket is too common
        SELECT k.key, h.pk, count(*) OVER (PARTITION BY k.key) AS n
        FROM (SELECT DISTINCT key FROM q) k
        CROSS JOIN LATERAL (SELECT b.identity_pk AS pk FROM blocking_key b WHERE b.key = k.key LIMIT :over) h
    ), scored AS (
        SELECT q.qpk, held.pk, sum(1.0::float8 / held.n) AS w
        FROM q JOIN held ON held.key = q.key
        WHERE held.n < :over AND {partner}
        GROUP BY q.qpk, held.pk
    ), ranked AS (
        SELECT qpk, pk, w, row_number() OVER (PARTITION BY qpk ORDER BY w DESC, pk) AS r FROM scored
    )
    SELECT r.qpk, r.pk, r.w FROM ranked r JOIN identity i ON i.pk = r.pk
    WHERE r.r <= :limit AND i.status = 'active'
"""
# upward (a sweep): partners among the larger pks only; otherwise every holder, the identity itself too
_RANKED = {
    upward: sa.text(_RANKED_SQL.replace("{partner}", "held.pk > q.qpk" if upward else "TRUE"))
    for upward in (True, False)
}


async def _ranked(
    conn: AsyncConnection, asking: Sequence[int], keyed: Sequence[list[int]], limit: int, upward: bool
) -> dict[int, dict[int, float]]:
    """asking pk -> {partner pk: weight}: its ``limit`` best holders of its keys that are active."""
    out: dict[int, dict[int, float]] = {pk: {} for pk in asking}
    if conn.dialect.name == "postgresql":
        qpk = [pk for pk, own in zip(asking, keyed, strict=True) for _ in own]
        qkey = [k for own in keyed for k in own]
        rows = await conn.execute(_RANKED[upward], {"qpk": qpk, "qkey": qkey, "over": BUCKET_CAP + 1, "limit": limit})
        for q, pk, w in rows:
            out[q][pk] = float(w)
        return out
    chosen = await best_by_keys(conn, keyed, limit, after=list(asking) if upward else None)
    wanted = sorted({pk for best in chosen for _, pk in best})
    active = set(
        (await conn.execute(
            sa.select(t.identity.c.pk).where(pk_in(conn, t.identity.c.pk, wanted), t.identity.c.status == "active")
        )).scalars()
    )
    for q, best in zip(asking, chosen, strict=True):
        out[q] = {pk: -w for w, pk in best if pk in active}
    return out


async def read_people(conn: AsyncConnection, pks: Sequence[int], where: Any = None) -> Batch:
    """The matched columns of these active identities (or of those ``where`` selects), and their external ids."""
    if where is None:
        where = pk_in(conn, t.identity.c.pk, sorted(set(pks)))
    rows = list(await conn.execute(sa.select(*_COLUMNS).where(where, t.identity.c.status == "active")))
    external = await external_ids_of(conn, [row.pk for row in rows])
    return Batch(
        people={row.pk: person_of(row, external.get(row.pk)) for row in rows},
        meta={row.pk: Identity(row.mpi_id, row.created_at, row.region_code) for row in rows},
    )


async def partners(conn: AsyncConnection, batch: Batch, limit: int, *, upward: bool) -> set[tuple[int, int]]:
    """Unordered pairs (a < b) of each identity of ``batch`` with its best partners; the
    partners' columns are added to ``batch``.

    ``upward``: partners among the larger pks only (a sweep).  Otherwise any partner, the
    identity itself excepted: ``limit + 1`` are ranked and it is dropped, as the candidate
    code ranks an identity among its own candidates (its external ids count for it).
    """
    asking = sorted(batch.people)
    if not asking:
        return set()
    keyed = [query_keys(batch.people[pk]) for pk in asking]
    cut = limit if upward else limit + 1
    ranked = await _ranked(conn, asking, keyed, cut, upward)
    pairs: set[tuple[int, int]] = set()
    for q in asking:
        scored = ranked[q]
        if not upward:
            own = sum(1 for value in batch.people[q].external_ids.values() if value)
            if own:
                scored[q] = scored.get(q, 0.0) + _EXTERNAL_WEIGHT * own
        best = sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:cut]
        pairs.update((min(q, pk), max(q, pk)) for pk, _ in best if pk != q)
    missing = sorted({pk for pair in pairs for pk in pair} - set(batch.people))
    if missing:
        more = await read_people(conn, missing)
        batch.people.update(more.people)
        batch.meta.update(more.meta)
    return {(a, b) for a, b in pairs if a in batch.people and b in batch.people}


def score_batch(matcher: Matcher, batch: Batch, pairs: set[tuple[int, int]]) -> list[Found]:
    """Score every pair, each with its smaller pk's partners as the query set; the pairs at
    or above ``probable``, best first (then by pks: the same order whatever the batch)."""
    if not pairs:
        return []
    ordered = sorted(pairs)
    pks = sorted({pk for pair in ordered for pk in pair})
    at = {pk: i for i, pk in enumerate(pks)}
    people = [batch.people[pk] for pk in pks]
    left = np.array([at[a] for a, _ in ordered], dtype=np.int64)
    right = np.array([at[b] for _, b in ordered], dtype=np.int64)
    probable = matcher.thresholds.probable
    if isinstance(matcher, LearnedMatcher):
        scores, _, described, x = matcher.score_pairs(people, left, right, left, floor=probable)
        kept = [i for i in range(len(ordered)) if scores[i] >= probable and described[i][1] != "dhis2_uid"]
        results = dict(zip(kept, matcher._results(kept, scores, described, x), strict=True))
        conflicted = [i for i in range(len(ordered)) if described[i][1] == "dhis2_uid"]
    else:  # the Fellegi-Sunter scorer (MPI_MATCHER=fellegi_sunter): pair by pair, as it always did
        results, conflicted = {}, []
        by_a: dict[int, list[int]] = defaultdict(list)
        for i, (a, _) in enumerate(ordered):
            by_a[a].append(i)
        for a, rows in by_a.items():
            for i, result in matcher.rank(batch.people[a], [(i, batch.people[ordered[i][1]]) for i in rows],
                                          limit=len(rows), min_score=0.0):
                if result.hard_conflict == "dhis2_uid":
                    conflicted.append(i)
                elif result.score >= probable:
                    results[i] = result
    for i in conflicted:
        # Two DHIS2 UIDs sink the score; whether the pair needs a person's eye is what the
        # rest of the evidence says.
        a, b = ordered[i]
        rest = matcher.compare(replace(batch.people[a], external_ids={}), replace(batch.people[b], external_ids={}))
        if rest.score >= probable:
            results[i] = replace(rest, hard_conflict="dhis2_uid")
    found = [Found(ordered[i][0], ordered[i][1], result) for i, result in results.items()]
    found.sort(key=lambda f: (-f.result.score, f.a, f.b))
    return found
