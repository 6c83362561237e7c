"""The node's sync with its hub, and its own review items."""

from __future__ import annotations

from aiohttp import web

from ...schemas import ReviewQuery
from ..context import render, service

__all__ = ["sync"]


async def sync(request: web.Request) -> web.Response:
    """GET /console/sync: pending changes, last success and error, refused sets; open review items."""
    adapter = service(request)
    reviews = await adapter.reviews(ReviewQuery(limit=1))
    return render(request, "sync.html", {"title": "Sync status", "status": await adapter.sync_status(),
                                          "reviews": reviews})
