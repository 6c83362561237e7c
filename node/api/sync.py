"""GET /sync/status and POST /sync/now: the node's view of its sync with the hub."""

from __future__ import annotations

from aiohttp import web

from shared.api.http import answer
from shared.errors import ApiError
from shared.keys import node_sync_key, settings_key
from shared.sync.errors import SyncError, status_of
from shared.sync.node import LinkDown

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
    try:
        moved = await sync.round(link)
    except LinkDown as exc:
        raise ApiError(f"the hub cannot be reached: {exc}", code="hub_unreachable", status=503) from None
    except SyncError as exc:
        raise ApiError(exc.message, code="sync_refused", status=502, reason=status_of(exc)[1]) from None
    return answer({"status": "ok", "pushed": moved.pushed, "pulled": moved.pulled,
                   "acked_seq": moved.acked_seq, "pull_pos": moved.pull_pos, "requests": moved.requests})
