"""Duplicate detection across the whole registry: the hub's incremental check and full sweep.

Candidate pairs come from the one candidate code of register, ``/mpi/match`` and bulk
import (``identities.candidates``, a batch at a time): each identity's query keys (its
names both ways round, birth year +-1, day and month swapped) are looked up in
``blocking_key`` in one statement, buckets above ``BUCKET_CAP`` say nothing, and the
``candidate_limit`` best partners by what they share are kept.  Each pair is scored once
with the shared matcher.  A pair at or above the auto-merge threshold with no hard conflict
is merged, the older registration being the target; a pair between the probable threshold
and auto-merge, or with a hard conflict, goes to the review queue.  Pairs a supervisor
declared ``not_same`` are never raised again, and a pair with an open review item is not
queued twice.

``Dedup.check(pks)`` handles the pairs with at least one side in ``pks``.  ``enqueue(tx,
pks)`` records identities to check in the transaction that wrote them (the hub applying a
node's registrations); ``Dedup.drain()`` checks and forgets them.

``Dedup.sweep()`` walks the registry in slices of primary keys: an identity's partners are
taken among the larger pks only, so the slices meet every pair at most once, from its
smaller pk.  After each slice it records how far it got (``dedup_progress``): memory stays
bounded by the slice and a crash resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import ApiError, SameIdentity
from .identities.candidates import candidates
from .identities.fields import Row
from .identities.lookup import external_ids_of, id_list, pk_in
from .matching import MatchResult, Person, evidence_detail, person_of
from .registry import Registry
from .review.items import is_not_same, open_pair_review
from .schemas import MergeIn
from .storage import schema as t
from .storage.store import Store, Tx, utc_now

__all__ = [
    "Dedup", "DedupStats", "Slice", "claim_slice", "enqueue", "finish_slice", "plan_sweep", "renew_slice", "slices_left",
]

log = logging.getLogger("mpi.dedup")


@dataclass
class DedupStats:
    checked: int = 0
    merged: int = 0
    queued: int = 0
    seconds: float = 0.0
    scored: int = 0  # candidate pairs scored, each once (not kept in dedup_progress)
    finished: bool = True  # False: a sweep stopped by ``stop_after`` before the end (the next one resumes)

    def add(self, other: DedupStats) -> None:
        self.checked += other.checked
        self.scored += other.scored
        self.merged += other.merged
        self.queued += other.queued


_DECISIONS_PER_TX = 100  # merges and queued pairs per write transaction (the write lock is held meanwhile)


async def _active_rows(conn: AsyncConnection, pks: Sequence[int]) -> list[Row]:
    active = t.identity.c.status == "active"
    return list(await conn.execute(sa.select(t.identity).where(pk_in(conn, t.identity.c.pk, sorted(set(pks))), active)))


async def _best_pairs(
    conn: AsyncConnection, rows: Sequence[Row], limit: int, *, upward: bool
) -> tuple[set[tuple[int, int]], dict[int, Row], dict[int, Person]]:
    """Unordered pairs (a < b) of each identity with its best candidates, and every row and person involved.

    ``upward``: partners among the larger pks only (a sweep slice).  Otherwise any partner,
    the identity itself excepted.  The people carry their external ids wherever a pair
    needs them: ``candidates`` reads the partners' ids when one of the asking side has some.
    """
    external = await external_ids_of(conn, [row.pk for row in rows])
    asking = [person_of(row, external.get(row.pk)) for row in rows]
    found = await candidates(
        conn, asking, limit if upward else limit + 1, after=[row.pk for row in rows] if upward else None
    )
    pairs: set[tuple[int, int]] = set()
    involved = {row.pk: row for row in rows}
    people: dict[int, Person] = {}
    for row, partners in zip(rows, found, strict=True):
        for other, person in partners:
            if other.pk != row.pk:
                pairs.add((row.pk, other.pk) if row.pk < other.pk else (other.pk, row.pk))
                involved[other.pk] = other
                people[other.pk] = person
    # The asking side last: its own external ids are always read.
    people.update((row.pk, person) for row, person in zip(rows, asking, strict=True))
    return pairs, involved, people


def _older_first(a: Row, b: Row) -> tuple[Row, Row]:
    """(target, source): the older registration survives, then the smaller ID."""
    return (a, b) if (a.created_at, a.mpi_id) <= (b.created_at, b.mpi_id) else (b, a)


async def enqueue(tx: Tx, pks: Sequence[int]) -> None:
    """Ask for these identities to be checked, in the caller's transaction."""
    if pks:
        # The pks bound as one value: a bulk import queues thousands in one short statement.
        listed = id_list(tx.conn.dialect.name, "pk_list", sorted(set(pks)))
        await tx.conn.execute(
            tx.insert_ignore(t.dedup_pending).from_select(
                # WHERE: SQLite reads ON CONFLICT after a bare FROM as a join's ON.
                ["identity_pk", "queued_at"], sa.select(listed.c.value, sa.literal(tx.now, sa.String)).where(sa.true())
            )
        )


class Dedup:
    def __init__(self, registry: Registry, *, auto_merge: float, actor: str = "dedup") -> None:
        self.registry = registry
        self.store = registry.store
        self.auto_merge = auto_merge
        self.actor = actor

    def _auto(self, result: MatchResult) -> bool:
        return result.score >= self.auto_merge and result.hard_conflict is None

    async def check(self, pks: Sequence[int]) -> DedupStats:
        """Match these identities against the registry; merge or queue what is found."""
        async with self.store.read() as conn:
            active = await _active_rows(conn, pks)
            pairs, rows, people = await _best_pairs(conn, active, self.registry.candidate_limit, upward=False)
        stats = await self._decide(pairs, rows, people)
        stats.checked = len(active)
        return stats

    async def _decide(
        self, pairs: set[tuple[int, int]], rows: Mapping[int, Row], people: Mapping[int, Person]
    ) -> DedupStats:
        """Score each (a, b) once; merge or queue those at or above the probable threshold."""
        stats = DedupStats(scored=len(pairs))
        if not pairs:
            return stats
        partners: dict[int, list[int]] = defaultdict(list)
        for a, b in pairs:
            partners[a].append(b)
        matcher = self.registry.matcher
        probable = matcher.thresholds.probable
        found_pairs: list[tuple[Row, Row, MatchResult]] = []
        for a, others in partners.items():
            person = people[a]
            # rank with no floor and no limit: one score for each of a's pairs, a's features computed once
            for b, result in matcher.rank(person, [(b, people[b]) for b in others], limit=len(others), min_score=0.0):
                if result.hard_conflict == "dhis2_uid":
                    # Two DHIS2 UIDs sink the score; whether the pair needs a person's eye is
                    # what the rest of the evidence says.
                    rest = matcher.compare(replace(person, external_ids={}), replace(people[b], external_ids={}))
                    result = replace(rest, hard_conflict="dhis2_uid")
                if result.score >= probable:
                    found_pairs.append((rows[a], rows[b], result))
        ordered = sorted(found_pairs, key=lambda pair: -pair[2].score)
        # Decisions go in transactions of up to _DECISIONS_PER_TX: a commit (a log flush on
        # PostgreSQL) per merge was most of a sweep's time. A refused merge raises before it
        # writes anything, so it never leaves half a merge in the transaction it shares.
        for start in range(0, len(ordered), _DECISIONS_PER_TX):
            async with self.store.write(self.actor) as tx:
                for a_row, b_row, result in ordered[start : start + _DECISIONS_PER_TX]:
                    target, source = _older_first(a_row, b_row)
                    merged = await self._merge(tx, source, target, result) if self._auto(result) else False
                    if merged is None:
                        continue  # one identity already (merged earlier in this slice): nothing to decide
                    if merged:
                        stats.merged += 1
                    elif await self._queue(tx, source, target, result):
                        stats.queued += 1
        return stats

    async def _merge(self, tx: Tx, source: Row, target: Row, result: MatchResult) -> bool | None:
        """True when merged; False when refused (a person decides); None when they are one identity already."""
        body = MergeIn(
            source_mpi_id=source.mpi_id,
            target_mpi_id=target.mpi_id,
            reason=f"automatic merge by the hub's dedup (score {result.score}: {', '.join(result.matched_fields)})",
            keep_target=True,
        )
        if await is_not_same(tx.conn, source.mpi_id, target.mpi_id):
            return False
        try:
            await self.registry.merge_in(tx, body)
        except SameIdentity:
            return None
        except ApiError as exc:
            # Merged meanwhile, or a conflict the matcher could not see (external ids): a person decides.
            log.info("auto-merge of %s into %s not done: %s", source.mpi_id, target.mpi_id, exc.message)
            return False
        return True

    async def _queue(self, tx: Tx, source: Row, target: Row, result: MatchResult) -> bool:
        reason = "hard_conflict" if result.hard_conflict else "probable"
        return await open_pair_review(
            tx,
            reason,
            target.mpi_id,
            source.mpi_id,
            result.score,
            result.matched_fields,
            detail=({"hard_conflict": result.hard_conflict} if result.hard_conflict else {}) | evidence_detail(result),
        )

    async def drain(self, batch: int = 500) -> DedupStats:
        """Check what ``enqueue`` recorded, a batch at a time, until nothing is left."""
        total = DedupStats()
        if self.store.dialect.name == "postgresql":
            while (done := await self.drain_claimed(batch)) is not None:
                total.add(done)
            return total
        while True:
            async with self.store.read() as conn:
                pks = list(
                    (
                        await conn.execute(
                            sa.select(t.dedup_pending.c.identity_pk).order_by(t.dedup_pending.c.identity_pk).limit(batch)
                        )
                    ).scalars()
                )
            if not pks:
                return total
            total.add(await self.check(pks))
            async with self.store.write(self.actor) as tx:
                await tx.conn.execute(sa.delete(t.dedup_pending).where(t.dedup_pending.c.identity_pk.in_(pks)))

    async def drain_claimed(self, batch: int = 500) -> DedupStats | None:
        """PostgreSQL: claim a batch of pending identities, check them, forget them; None when none is free.

        The claim is a row lock (``FOR UPDATE SKIP LOCKED``) held by a transaction open while the
        batch is checked: another worker skips these rows, and a worker killed meanwhile loses
        its connection, so its rows are free again and the next worker checks them.
        """
        pending = t.dedup_pending
        async with self.store.writer.connect() as claim, claim.begin():
            pks = list((await claim.execute(
                sa.select(pending.c.identity_pk).order_by(pending.c.identity_pk).limit(batch)
                .with_for_update(skip_locked=True)
            )).scalars())
            if not pks:
                return None
            stats = await self.check(pks)
            await claim.execute(sa.delete(pending).where(pending.c.identity_pk.in_(pks)))
        return stats

    async def sweep(
        self,
        *,
        job: str = "sweep",
        batch: int = 1000,
        restart: bool = False,
        progress: Callable[[DedupStats, int], None] | None = None,
        stop_after: int | None = None,
    ) -> DedupStats:
        """Re-check the whole registry, resumably; ``progress(stats, last_pk)`` after each batch.

        ``stop_after``: return once this many identities were checked in this call, the sweep
        unfinished (the next call resumes it), e.g. to sweep a big registry in night windows.
        """
        started = time.perf_counter()
        now = utc_now()
        async with self.store.write(self.actor) as tx:
            row = (await tx.conn.execute(sa.select(t.dedup_progress).where(t.dedup_progress.c.job == job))).first()
            if row is None or restart or row.finished_at is not None:
                await tx.conn.execute(sa.delete(t.dedup_progress).where(t.dedup_progress.c.job == job))
                await tx.conn.execute(
                    sa.insert(t.dedup_progress).values(
                        job=job, last_pk=0, checked=0, merged=0, queued=0, started_at=now, updated_at=now
                    )
                )
                total = DedupStats()
                last_pk = 0
            else:
                total = DedupStats(row.checked, row.merged, row.queued)
                last_pk = int(row.last_pk)
        checked_here = 0
        while True:
            stats, last = await self._sweep_batch(last_pk, None, batch)
            if last is None:
                break
            total.add(stats)
            last_pk = last
            async with self.store.write(self.actor) as tx:
                await tx.conn.execute(
                    sa.update(t.dedup_progress)
                    .where(t.dedup_progress.c.job == job)
                    .values(
                        last_pk=last_pk, checked=total.checked, merged=total.merged, queued=total.queued,
                        updated_at=utc_now(),
                    )
                )
            if progress is not None:
                progress(total, last_pk)
            checked_here += stats.checked
            if stop_after is not None and checked_here >= stop_after:
                total.seconds = time.perf_counter() - started
                total.finished = False
                return total
        async with self.store.write(self.actor) as tx:
            await tx.conn.execute(
                sa.update(t.dedup_progress).where(t.dedup_progress.c.job == job).values(finished_at=utc_now())
            )
            tx.audit("dedup_sweep", None, checked=total.checked, merged=total.merged, queued=total.queued)
        total.seconds = time.perf_counter() - started
        return total

    async def _sweep_batch(self, after: int, upto: int | None, batch: int) -> tuple[DedupStats, int | None]:
        """Check up to ``batch`` active identities with after < pk <= upto; (stats, last pk or None when none)."""
        where = [t.identity.c.pk > after, t.identity.c.status == "active"]
        if upto is not None:
            where.append(t.identity.c.pk <= upto)
        async with self.store.read() as conn:
            slice_rows = list(
                await conn.execute(sa.select(t.identity).where(*where).order_by(t.identity.c.pk).limit(batch))
            )
            if not slice_rows:
                return DedupStats(), None
            pairs, rows, people = await _best_pairs(conn, slice_rows, self.registry.candidate_limit, upward=True)
        stats = await self._decide(pairs, rows, people)
        stats.checked = len(slice_rows)
        return stats, int(slice_rows[-1].pk)

    async def sweep_slice(self, lo_pk: int, hi_pk: int, batch: int = 1000) -> DedupStats:
        """One slice of a sweep cut for workers: the active identities with lo_pk < pk <= hi_pk.

        Doing a slice again (its worker was killed after some merges) decides nothing twice:
        a merged identity is no longer active, a pair merged already is one identity, and an
        open review item is not queued twice.
        """
        total = DedupStats()
        after = lo_pk
        while True:
            stats, last = await self._sweep_batch(after, hi_pk, batch)
            if last is None:
                return total
            total.add(stats)
            after = last


# -- a sweep cut into slices for ``mpi-hub dedup worker`` processes -----------------------------


@dataclass
class Slice:
    job: str
    lo_pk: int
    hi_pk: int


async def plan_sweep(store: Store, job: str = "sweep", *, size: int = 1000, restart: bool = False) -> int:
    """Cut a sweep of the active identities into slices of about ``size``; returns how many were made.

    A sweep whose slices are not all done is left alone (0), unless ``restart``.
    """
    async with store.write("dedup") as tx:
        s = t.dedup_slice
        if not restart:
            open_ = (await tx.conn.execute(
                sa.select(sa.func.count()).select_from(s).where(s.c.job == job, s.c.status != "done")
            )).scalar_one()
            if open_:
                return 0
        await tx.conn.execute(sa.delete(s).where(s.c.job == job))
        ranked = (
            sa.select(t.identity.c.pk, sa.func.row_number().over(order_by=t.identity.c.pk).label("n"))
            .where(t.identity.c.status == "active")
            .subquery()
        )
        ends = [int(pk) for pk in (await tx.conn.execute(
            sa.select(ranked.c.pk).where(ranked.c.n % size == 0).order_by(ranked.c.pk)
        )).scalars()]
        top = (await tx.conn.execute(sa.select(sa.func.max(t.identity.c.pk)))).scalar()
        if top is not None and (not ends or ends[-1] < int(top)):
            ends.append(int(top))
        rows, lo = [], 0
        for hi in ends:
            rows.append({"job": job, "lo_pk": lo, "hi_pk": hi, "status": "todo", "attempts": 0,
                         "checked": 0, "merged": 0, "queued": 0})
            lo = hi
        if rows:
            await tx.conn.execute(sa.insert(s), rows)
        tx.audit("dedup_sweep_planned", None, job=job, slices=len(rows))
        return len(rows)


def _later(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def claim_slice(store: Store, worker: str, lease_seconds: float, job: str = "sweep") -> Slice | None:
    """Take the first slice nobody holds (never claimed, or its lease lapsed), or None.

    ``FOR UPDATE SKIP LOCKED``: two workers claiming at once never wait on, nor take, the same row.
    """
    s = t.dedup_slice
    async with store.writer.begin() as conn:
        row = (await conn.execute(
            sa.select(s.c.job, s.c.lo_pk, s.c.hi_pk)
            .where(s.c.job == job, sa.or_(s.c.status == "todo",
                                          sa.and_(s.c.status == "claimed", s.c.lease_until < utc_now())))
            .order_by(s.c.lo_pk)
            .limit(1)
            .with_for_update(skip_locked=True)
        )).first()
        if row is None:
            return None
        await conn.execute(
            sa.update(s).where(s.c.job == job, s.c.lo_pk == row.lo_pk)
            .values(status="claimed", worker=worker, lease_until=_later(lease_seconds), attempts=s.c.attempts + 1)
        )
    return Slice(job, int(row.lo_pk), int(row.hi_pk))


async def renew_slice(store: Store, piece: Slice, worker: str, lease_seconds: float) -> bool:
    """The heartbeat: push the lease on; False when the slice is no longer this worker's."""
    s = t.dedup_slice
    async with store.writer.begin() as conn:
        done = await conn.execute(
            sa.update(s).where(s.c.job == piece.job, s.c.lo_pk == piece.lo_pk, s.c.worker == worker,
                               s.c.status == "claimed")
            .values(lease_until=_later(lease_seconds))
        )
    return bool(done.rowcount)


async def finish_slice(store: Store, piece: Slice, worker: str, stats: DedupStats) -> bool:
    """Mark a slice done; True when it was the sweep's last one (its audit record is written)."""
    s = t.dedup_slice
    async with store.write("dedup") as tx:
        await tx.conn.execute(
            sa.update(s).where(s.c.job == piece.job, s.c.lo_pk == piece.lo_pk)
            .values(status="done", worker=worker, done_at=utc_now(), checked=stats.checked, merged=stats.merged,
                    queued=stats.queued)
        )
        left = (await tx.conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.job == piece.job, s.c.status != "done")
        )).scalar_one()
        if left:
            return False
        total = (await tx.conn.execute(
            sa.select(sa.func.sum(s.c.checked), sa.func.sum(s.c.merged), sa.func.sum(s.c.queued)).where(s.c.job == piece.job)
        )).one()
        tx.audit("dedup_sweep", None, job=piece.job, checked=int(total[0] or 0), merged=int(total[1] or 0),
                 queued=int(total[2] or 0), workers=True)
        return True


async def slices_left(store: Store, job: str = "sweep") -> int:
    s = t.dedup_slice
    async with store.read() as conn:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.job == job, s.c.status != "done")
        )).scalar_one())
