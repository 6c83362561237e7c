"""POST /dedup/run (supervisor): one pass of the hub's cross-region dedup, now."""

from __future__ import annotations

from aiohttp import web

from shared.api.http import answer

from ..jobs import dedup_runner_key

__all__ = ["run_dedup"]


async def run_dedup(request: web.Request) -> web.Response:
    """POST /dedup/run"""
    stats = await request.app[dedup_runner_key].drain_now()
    return answer({"checked": stats.checked, "merged": stats.merged, "queued": stats.queued})
