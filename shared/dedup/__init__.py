"""Duplicate detection across the whole registry: the hub's incremental check and full sweep.

One path for both, a batch of identities at a time (``pairs``): each identity's partners
ranked inside the database from its blocking keys (pks and weights only; buckets above
``BUCKET_CAP`` say nothing; the ``candidate_limit`` best partners by what they share are
kept, as the candidate code of register, ``/mpi/match`` and import keeps them), the matched
columns of the batch and its partners read once, every pair scored in one matrix by the
learned matcher (``LearnedMatcher.score_pairs``: features of all pairs at once, trees over
all rows).  The pairs at or above ``probable`` are then decided best first (``decide``): at
or above the auto-merge threshold with no hard conflict merged, the older registration
being the target; the others queued for review.  Pairs a supervisor declared ``not_same``
are never raised again, and a pair with an open review item is not queued twice.

``Dedup.check(pks)`` handles the pairs with at least one side in ``pks``.  ``enqueue(tx,
pks)`` records identities to check in the transaction that wrote them (the hub applying a
node's registrations); ``Dedup.drain()`` checks and forgets them.

``Dedup.sweep()`` re-checks the registry in two phases.  It walks the registry in slices of
primary keys, an identity's partners taken among the larger pks only (so every pair is
met once, from its smaller pk), and keeps each slice's scored pairs (``dedup_pair``) with
its progress (``dedup_progress``) in one transaction: memory stays bounded by the slice
and a crash resumes where it stopped.  Nothing is merged while slices are scored, so every
pair is scored against the same registry; then all the pairs are decided in one order.
``mpi-hub dedup worker`` processes do the same with the slices shared out (``slices``):
the same merges with one worker or many.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from ..identities.lookup import id_list
from ..registry import Registry
from ..storage import schema as t
from ..storage.store import Tx, utc_now
from .decide import decide
from .pairs import Found, partners, read_people, score_batch
from .slices import (
    DECIDE,
    Slice,
    claim_slice,
    finish_slice,
    plan_sweep,
    read_pairs,
    renew_slice,
    slices_left,
    write_pairs,
)
from .stats import DedupStats

__all__ = [
    "DECIDE", "Dedup", "DedupStats", "Slice", "claim_slice", "enqueue", "finish_slice", "plan_sweep", "renew_slice",
    "slices_left",
]


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

    async def check(self, pks: Sequence[int]) -> DedupStats:
        """Match these identities against the registry; merge or queue what is found."""
        async with self.store.read() as conn:
            batch = await read_people(conn, pks)
            checked = len(batch.people)
            pairs = await partners(conn, batch, self.registry.candidate_limit, upward=False)
        found = score_batch(self.registry.matcher, batch, pairs)
        done = await decide(self.registry, self.actor, self.auto_merge, found, batch.meta)
        return DedupStats(checked=checked, scored=len(pairs), merged=done.merged, queued=done.queued)

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

    async def _score_range(self, after: int, upto: int | None, batch: int) -> tuple[list[Found], DedupStats, int | None]:
        """Score up to ``batch`` active identities with after < pk <= upto against their larger
        partners: (pairs at or above probable, stats, last pk or None when none is left)."""
        where = [t.identity.c.pk > after, t.identity.c.status == "active"]
        if upto is not None:
            where.append(t.identity.c.pk <= upto)
        async with self.store.read() as conn:
            pks = list((await conn.execute(
                sa.select(t.identity.c.pk).where(*where).order_by(t.identity.c.pk).limit(batch)
            )).scalars())
            if not pks:
                return [], DedupStats(), None
            people = await read_people(conn, pks)
            pairs = await partners(conn, people, self.registry.candidate_limit, upward=True)
        found = score_batch(self.registry.matcher, people, pairs)
        return found, DedupStats(checked=len(pks), scored=len(pairs)), int(pks[-1])

    async def score_slice(self, job: str, lo_pk: int, hi_pk: int, batch: int = 1000) -> DedupStats:
        """One slice of a sweep cut for workers (lo_pk < pk <= hi_pk): its pairs scored and kept for the decision.

        Scoring a slice again (its worker was killed) replaces what it kept.
        """
        async with self.store.write(self.actor) as tx:
            p = t.dedup_pair
            await tx.conn.execute(sa.delete(p).where(p.c.job == job, p.c.a_pk > lo_pk, p.c.a_pk <= hi_pk))
        total = DedupStats()
        after = lo_pk
        while True:
            found, stats, last = await self._score_range(after, hi_pk, batch)
            if last is None:
                return total
            async with self.store.write(self.actor) as tx:
                await write_pairs(tx, job, found)
            total.add(stats)
            after = last

    async def decide_job(self, job: str) -> DedupStats:
        """The decision of a sweep whose slices are all scored: every pair, best first.

        Done again (its worker was killed), it decides nothing twice: a pair merged already
        is one identity, and an open review item is not queued twice.
        """
        found, who = await read_pairs(self.store, job)
        done = await decide(self.registry, self.actor, self.auto_merge, found, who, sweep=True)
        return DedupStats(merged=done.merged, queued=done.queued)

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

        ``stop_after``: return once this many identities were scored in this call, the sweep
        unfinished (the next call resumes it; nothing is merged before the last slice is
        scored), e.g. to sweep a big registry in night windows.
        """
        started = time.perf_counter()
        now = utc_now()
        progress_t, pair_t = t.dedup_progress, t.dedup_pair
        async with self.store.write(self.actor) as tx:
            row = (await tx.conn.execute(sa.select(progress_t).where(progress_t.c.job == job))).first()
            if row is None or restart or row.finished_at is not None:
                await tx.conn.execute(sa.delete(progress_t).where(progress_t.c.job == job))
                await tx.conn.execute(sa.delete(pair_t).where(pair_t.c.job == job))
                await tx.conn.execute(
                    sa.insert(progress_t).values(
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
            found, stats, last = await self._score_range(last_pk, None, batch)
            if last is None:
                break
            total.add(stats)
            last_pk = last
            async with self.store.write(self.actor) as tx:
                await write_pairs(tx, job, found)
                await tx.conn.execute(
                    sa.update(progress_t)
                    .where(progress_t.c.job == job)
                    .values(last_pk=last_pk, checked=total.checked, updated_at=utc_now())
                )
            if progress is not None:
                progress(total, last_pk)
            checked_here += stats.checked
            if stop_after is not None and checked_here >= stop_after:
                total.seconds = time.perf_counter() - started
                total.finished = False
                return total
        decided = await self.decide_job(job)
        total.merged += decided.merged
        total.queued += decided.queued
        async with self.store.write(self.actor) as tx:
            await tx.conn.execute(
                sa.update(progress_t).where(progress_t.c.job == job)
                .values(merged=total.merged, queued=total.queued, finished_at=utc_now(), updated_at=utc_now())
            )
            await tx.conn.execute(sa.delete(pair_t).where(pair_t.c.job == job))
            tx.audit("dedup_sweep", None, checked=total.checked, merged=total.merged, queued=total.queued)
        total.seconds = time.perf_counter() - started
        return total
