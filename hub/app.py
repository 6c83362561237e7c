"""The hub application: the shared API on PostgreSQL, plus sync and node enrolment."""

from __future__ import annotations

from aiohttp import web

from shared.app import build_app
from shared.compose import compose
from shared.console import CONSOLE_ROUTES, HUB_CONSOLE_ROUTES
from shared.metrics import hub_metrics, metric_sources_key
from shared.routes import REVIEW_ROUTES, Route
from shared.settings import Settings
from shared.stores import hub_signing_key

from .api import dedup, nodes, sync
from .jobs import dedup_scheduler

__all__ = ["HUB_ROUTES", "create_app", "hub_signing_key"]

# No bearer token on the sync routes: each request is signed by an enrolled node key. Enrolment,
# open to anyone, is limited per client address (MPI_ENROLL_RATE_PER_MINUTE) before any lock.
HUB_ROUTES = [
    Route("POST", "/sync/push", sync.push, None, "Push a signed change set; the reply acknowledges it and carries the pull",
          statuses=(200, 400, 401, 403, 409, 413, 422)),
    Route("POST", "/sync/pull", sync.pull, None, "Pull what concerns the node (a signed request with no changes)",
          statuses=(200, 400, 401, 403)),
    Route("POST", "/sync/model", sync.model, None, "The file of a matcher model the hub named (a signed request)",
          statuses=(200, 400, 401, 403)),
    Route("POST", "/sync/enroll", nodes.register_node, None, "A node registers its key with its enrolment secret",
          statuses=(200, 400, 403, 429), rate_limit="enroll"),
    Route("GET", "/sync/nodes", nodes.list_nodes, "admin", "Enrolled nodes, their cursors and state"),
    Route("POST", "/dedup/run", dedup.run_dedup, "supervisor",
          "Run one pass of cross-region dedup now (what nodes registered since the last pass)"),
]


def create_app(settings: Settings) -> web.Application:
    """The hub's API over its services (``shared.compose``): sync, enrolment and the dedup runner come in with them."""
    app = build_app(compose(settings, "hub"), extra_routes=[*REVIEW_ROUTES, *HUB_ROUTES], lifetimes=[dedup_scheduler],
                    console_routes=[*CONSOLE_ROUTES, *HUB_CONSOLE_ROUTES])
    app[metric_sources_key].append(hub_metrics)
    return app
