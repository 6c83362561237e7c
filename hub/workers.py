"""Dedup workers, and the advisory locks that let several hub processes share one database.

``run_worker``: the loop of ``mpi-hub dedup worker``. Each turn it claims what no other worker
holds, first a batch of identities nodes registered since (``dedup_pending``, row locks
``FOR UPDATE SKIP LOCKED`` held while it is checked), then a slice of the sweep
(``dedup_slice``, a lease pushed on by a heartbeat while the slice is scored) or, once every
slice is scored, the sweep's decision step (all its pairs decided in one order, best first:
the same merges whatever the number of workers). A worker killed mid-slice leaves its lease
to lapse, and the next worker takes the slice again: its pairs are scored again and
replace what it kept; a decision done again decides nothing twice (``Dedup.decide_job``).
Any number of workers, on any machine reaching the database.

``job_lock``: a periodic job of ``mpi-hub serve`` runs only under its PostgreSQL advisory lock
(``pg_try_advisory_xact_lock``, one key per job): with several serve processes on one
database, exactly one runs it at a time and the others skip that turn. Each run is recorded
in ``job_run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from shared import modelstore
from shared.dedup import Dedup, DedupStats, Slice, claim_slice, finish_slice, renew_slice, slices_left
from shared.storage import schema as t
from shared.storage.store import Store, utc_now

__all__ = ["WorkerStats", "job_lock", "lock_key", "process_name", "run_worker"]

log = logging.getLogger("mpi.dedup.worker")


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_key(job: str) -> int:
    """The advisory lock key of a job: stable across processes and versions (CRC-32 of its name)."""
    return 0x4D5049_00000000 | zlib.crc32(f"mpi-job:{job}".encode())


@contextlib.asynccontextmanager
async def job_lock(store: Store, job: str, min_gap_seconds: float = 0.0) -> AsyncIterator[bool]:
    """Yields True with the job's advisory lock held (and its run recorded), False when another process holds it.

    The lock belongs to a transaction kept open on its own connection for the job's length:
    committed, or the process gone, and it is free. ``min_gap_seconds``: False too when a run
    of the job (by any process) started less than that long ago: each serve process has its
    own timer, and a daily sweep must not run once per process.
    """
    async with store.writer.connect() as conn, conn.begin():
        got = bool((await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(lock_key(job))))).scalar())
        if got and min_gap_seconds > 0:
            recent = (await conn.execute(
                sa.select(sa.func.count()).select_from(t.job_run)
                .where(t.job_run.c.job == job, t.job_run.c.started_at > _days_ago(min_gap_seconds / 86400))
            )).scalar_one()
            got = not recent
        if not got:
            yield False
            return
        async with store.writer.begin() as rec:
            run_pk = (await rec.execute(
                sa.insert(t.job_run).values(job=job, process=process_name(), started_at=utc_now())
                .returning(t.job_run.c.pk)
            )).scalar_one()
        try:
            yield True
        finally:
            async with store.writer.begin() as rec:
                await rec.execute(sa.update(t.job_run).where(t.job_run.c.pk == run_pk).values(finished_at=utc_now()))
                await rec.execute(sa.delete(t.job_run).where(
                    t.job_run.c.job == job, t.job_run.c.started_at < _days_ago(1)))


def _days_ago(days: float) -> str:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    return then.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class WorkerStats:
    slices: int = 0
    pending_batches: int = 0
    dedup: DedupStats | None = None


async def _heartbeat(store: Store, piece: Slice, worker: str, lease: float) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        try:
            if not await renew_slice(store, piece, worker, lease):
                log.warning("slice (%d, %d] is no longer this worker's", piece.lo_pk, piece.hi_pk)
                return
        except Exception:
            log.exception("heartbeat failed; retrying")


async def run_worker(
    dedup: Dedup,
    *,
    worker: str,
    lease_seconds: float = 60.0,
    poll_seconds: float = 5.0,
    batch: int = 1000,
    until_idle: bool = False,
    job: str = "sweep",
    on_slice: Callable[[int, int, DedupStats], None] | None = None,
) -> WorkerStats:
    """Claim and check work until stopped (or, ``until_idle``, until no slice is left to anyone)."""
    store = dedup.store
    total = DedupStats()
    out = WorkerStats(dedup=total)
    while True:
        await modelstore.refresh(store, dedup.registry.matcher)  # `mpi-hub model train/use` since the last turn
        pending = await dedup.drain_claimed(batch)
        if pending is not None:
            total.add(pending)
            out.pending_batches += 1
            continue
        piece = await claim_slice(store, worker, lease_seconds, job)
        if piece is not None:
            beat = asyncio.create_task(_heartbeat(store, piece, worker, lease_seconds))
            try:
                if piece.decides:
                    stats = await dedup.decide_job(piece.job)
                else:
                    stats = await dedup.score_slice(piece.job, piece.lo_pk, piece.hi_pk, batch)
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            last = await finish_slice(store, piece, worker, stats)
            total.add(stats)
            out.slices += 1
            if on_slice is not None:
                on_slice(piece.lo_pk, piece.hi_pk, stats)
            if last:
                log.info("sweep %s finished", job)
            continue
        if until_idle and not await slices_left(store, job):
            return out
        await asyncio.sleep(min(poll_seconds, lease_seconds / 3) if until_idle else poll_seconds)
