"""The node's scheduled sync (APScheduler), as a cleanup_ctx lifetime.

One job, never two runs at once (``max_instances=1``); after a failure the next attempt
waits ``interval * 2**failures`` seconds, capped at ``sync_max_backoff_seconds``, with
+-25 % jitter so that posts cut off together do not all call back at the same second.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from shared.keys import node_sync_key, settings_key
from shared.sync.errors import SyncError
from shared.sync.node import LinkDown

from .sync_client import HttpLink

__all__ = ["backoff", "sync_scheduler"]

log = logging.getLogger("mpi.sync.job")


def backoff(failures: int, interval: float, ceiling: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row."""
    base = min(ceiling, interval * 2 ** max(0, failures))
    return float(base * (rng or random.Random()).uniform(0.75, 1.25))


async def sync_scheduler(app: web.Application) -> AsyncIterator[None]:
    sync = app[node_sync_key]
    settings = app[settings_key]
    if not sync.enrolled:
        yield
        return
    scheduler = AsyncIOScheduler(timezone=dt.UTC)
    failures = 0

    async def _round() -> None:
        nonlocal failures
        link = HttpLink(sync.meta["hub_url"], settings.sync_timeout_seconds)
        try:
            moved = await sync.round(link)
            failures = 0
            if moved.pushed or moved.pulled:
                log.info("synced: %s", moved.line())
        except (LinkDown, SyncError) as exc:
            failures += 1
            delay = backoff(failures, settings.sync_interval_seconds, settings.sync_max_backoff_seconds)
            log.warning("sync failed (%s); next attempt in %.0f s", exc, delay)
            job.modify(next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))

    job = scheduler.add_job(
        _round, "interval", seconds=settings.sync_interval_seconds, max_instances=1, coalesce=True,
        # The first round comes soon after start, not a whole interval later.
        next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=settings.sync_interval_seconds / 10),
        id="sync",
    )
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)
