"""GET /sync/status and POST /sync/now: the node's view of its sync with the hub."""

from __future__ import annotations

from aiohttp import web

from shared.api.http import answer
from shared.errors import ApiError
from shared.keys import node_sync_key, settings_key

from ..sync_client import HttpLink

__all__ = ["sync_now", "sync_status"]


async def sync_status(request: web.Request) -> web.Response:
    """GET /sync/status"""
    return answer(await request.app[node_sync_key].status())


async def sync_now(request: web.Request) -> web.Response:
    """POST /sync/now"""
    sync = request.app[node_sync_key]
    if not sync.enrolled:
        raise ApiError("this node is not enrolled with a hub", code="not_enrolled", status=409)
    link = HttpLink(sync.meta["hub_url"], request.app[settings_key].sync_timeout_seconds)
    # A refusal by the hub (502 sync_refused) or a cut link (503 hub_unreachable) is answered by the
    # error middleware, from the one table in shared/sync/errors.py.
    moved = await sync.round(link)
    return answer({"status": "ok", "pushed": moved.pushed, "pulled": moved.pulled,
                   "acked_seq": moved.acked_seq, "pull_pos": moved.pull_pos, "requests": moved.requests})
