"""The node application: the shared API on the node's SQLite store, plus its sync."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.app import build_app
from shared.compose import compose
from shared.console import CONSOLE_ROUTES, NODE_CONSOLE_ROUTES
from shared.keys import node_sync_key, store_key
from shared.metrics import metric_sources_key, node_metrics
from shared.routes import Route
from shared.settings import Settings

from .api import sync
from .jobs import sync_scheduler

__all__ = ["NODE_ROUTES", "create_app"]

NODE_ROUTES = [
    Route("GET", "/sync/status", sync.sync_status, "supervisor", "Cursors, pending changes, last success and error, refusals"),
    Route("POST", "/sync/now", sync.sync_now, "supervisor", "Run one sync round (push then pull) now",
          statuses=(200, 409, 502, 503)),
]


async def _sync_health(app: web.Application) -> dict[str, Any]:
    """How far behind the hub this node is, for GET /health."""
    await app[store_key].refresh()  # an import by another process moved the log on
    status = await app[node_sync_key].status()
    return {
        "sync": {
            "enrolled": status["enrolled"],
            "pending_changes": status["pending_changes"],
            "behind": status["pending_changes"] > 0,
            "last_success": status["last_success"],
            "last_error": status["last_error"],
        }
    }


def create_app(settings: Settings) -> web.Application:
    """The node's API over its services (``shared.compose``): its sync comes in with them."""
    app = build_app(compose(settings, "node"), extra_routes=NODE_ROUTES, lifetimes=[sync_scheduler],
                    health=[_sync_health], console_routes=[*CONSOLE_ROUTES, *NODE_CONSOLE_ROUTES])
    app[metric_sources_key].append(node_metrics)
    return app
