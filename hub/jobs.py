"""The hub's dedup jobs (APScheduler), as a cleanup_ctx lifetime, and one pass on demand.

- ``drain``: every ``dedup_interval_seconds`` (0: only on demand), what nodes registered
  or renamed since the last run (``dedup_pending``, written in the push transaction) is
  matched against the whole country: certain pairs merged, probable ones queued for review.
- ``sweep``: every ``dedup_sweep_hours``, the whole registry is re-checked (after a
  threshold or matcher change), resuming an interrupted sweep where it stopped.
- ``DedupRunner.drain_now()``: one drain pass now, waiting for a running one to finish
  first (``POST /dedup/run``, so that a supervisor, a script or a test need not guess when
  the scheduled job will have run).

No two passes run at once in one hub process (one lock for the scheduled jobs and the
on-demand pass), and each scheduled job runs under its PostgreSQL advisory lock
(``workers.job_lock``): with several ``mpi-hub serve`` processes on one database, one of them
runs it each turn, the others skip it. With ``MPI_DEDUP_IN_SERVE=false`` the drain is left
to ``mpi-hub dedup worker`` processes and the sweep job only cuts slices for them. A failure
is logged and the next run tries again: what was pending stays pending.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from shared import modelstore
from shared.dedup import plan_sweep
from shared.dedup_runner import DedupRunner
from shared.keys import dedup_runner_key, settings_key

from .workers import job_lock

__all__ = ["DedupRunner", "dedup_runner_key", "dedup_scheduler"]

log = logging.getLogger("mpi.dedup.job")


async def dedup_scheduler(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    runner = app[dedup_runner_key]
    store = runner.dedup.store
    scheduler = AsyncIOScheduler(timezone=dt.UTC)

    async def _drain() -> None:
        try:
            async with job_lock(store, "drain") as mine:
                if not mine:
                    return  # another hub process runs this turn
                await modelstore.refresh(store, runner.dedup.registry.matcher)  # `mpi-hub model` since the last turn
                stats = await runner.drain_now()
        except Exception:
            log.exception("dedup of new registrations failed; they stay queued")
            return
        if stats.checked:
            log.info("dedup: %d checked, %d merged, %d queued for review", stats.checked, stats.merged, stats.queued)

    async def _sweep() -> None:
        try:
            async with job_lock(store, "sweep", min_gap_seconds=settings.dedup_sweep_hours * 3600 / 2) as mine:
                if not mine:
                    return
                if not settings.dedup_in_serve:
                    # Workers do the work: this process only cuts the sweep into their slices.
                    made = await plan_sweep(store, "sweep")
                    log.info("dedup sweep: %d slices for the workers", made)
                    return
                stats = await runner.sweep_now()
        except Exception:
            log.exception("dedup sweep failed; the next one resumes it")
            return
        log.info("dedup sweep: %d checked, %d merged, %d queued", stats.checked, stats.merged, stats.queued)

    if settings.dedup_interval_seconds > 0 and settings.dedup_in_serve:
        scheduler.add_job(_drain, "interval", seconds=settings.dedup_interval_seconds, max_instances=1, coalesce=True,
                          id="drain")
    if settings.dedup_sweep_hours > 0:
        scheduler.add_job(_sweep, "interval", hours=settings.dedup_sweep_hours, max_instances=1, coalesce=True, id="sweep")
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
