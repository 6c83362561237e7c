"""The hub's dedup jobs (APScheduler), as a cleanup_ctx lifetime.

- ``drain``: every ``dedup_interval_seconds``, what nodes registered or renamed since the
  last run (``dedup_pending``, written in the push transaction) is matched against the
  whole country: certain pairs merged, probable ones queued for review.
- ``sweep``: every ``dedup_sweep_hours``, the whole registry is re-checked (after a
  threshold or matcher change), resuming an interrupted sweep where it stopped.

Neither job runs twice at once (``max_instances=1``); a failure is logged and the next
run tries again: what was pending stays pending.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from shared.dedup import Dedup
from shared.keys import registry_key, settings_key

__all__ = ["dedup_scheduler"]

log = logging.getLogger("mpi.dedup.job")


async def dedup_scheduler(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    dedup = Dedup(app[registry_key], auto_merge=settings.auto_merge_threshold)
    scheduler = AsyncIOScheduler(timezone=dt.UTC)

    async def _drain() -> None:
        try:
            stats = await dedup.drain()
        except Exception:
            log.exception("dedup of new registrations failed; they stay queued")
            return
        if stats.checked:
            log.info("dedup: %d checked, %d merged, %d queued for review", stats.checked, stats.merged, stats.queued)

    async def _sweep() -> None:
        try:
            stats = await dedup.sweep()
        except Exception:
            log.exception("dedup sweep failed; the next one resumes it")
            return
        log.info("dedup sweep: %d checked, %d merged, %d queued", stats.checked, stats.merged, stats.queued)

    scheduler.add_job(_drain, "interval", seconds=settings.dedup_interval_seconds, max_instances=1, coalesce=True, id="drain")
    if settings.dedup_sweep_hours > 0:
        scheduler.add_job(_sweep, "interval", hours=settings.dedup_sweep_hours, max_instances=1, coalesce=True, id="sweep")
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
