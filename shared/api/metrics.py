"""GET /metrics (admin or the metrics role): the Prometheus text exposition."""

from __future__ import annotations

from aiohttp import web

from ..metrics import CONTENT_TYPE, scrape


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics"""
    return web.Response(body=await scrape(request.app), headers={"Content-Type": CONTENT_TYPE})
