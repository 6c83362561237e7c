"""The one route table of the API, with the role each route needs (None: public).

Node and hub serve these same routes; each role appends its own. The OpenAPI document
and the auth middleware both read this table, so a route is declared once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from . import schemas
from .api import audit, cards, dhis2, identities, match, merge, metrics, review

__all__ = ["REVIEW_ROUTES", "ROUTES", "Route"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: str | None  # least role allowed; None means public
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    statuses: tuple[int, ...] = (200,)
    rate_limit: str | None = None  # a per-address limit of its own: "verify", "enroll"
    # A console page: the API route ("GET /sync/nodes") whose data it shows. Its role is then the
    # higher of ``role`` and that route's: one role table serves the API and the console.
    shows: str | None = None


# Fixed paths come before /mpi/{mpi_id}: the router tries routes in this order.
ROUTES: list[Route] = [
    Route("POST", "/mpi/register", identities.register, "registrar", "Register a beneficiary",
          schemas.RegisterIn, statuses=(201, 400, 409, 413)),
    Route("GET", "/mpi/search", identities.search, "registrar", "Search the registry",
          query=schemas.SearchQuery, statuses=(200, 400)),
    Route("POST", "/mpi/match", match.match, "registrar", "Score attributes against the registry",
          schemas.MatchIn, statuses=(200, 400)),
    Route("POST", "/mpi/merge", merge.merge, "supervisor", "Merge two identities",
          schemas.MergeIn, statuses=(200, 400, 403, 404, 409)),
    Route("POST", "/mpi/unmerge", merge.unmerge, "supervisor", "Undo a merge",
          schemas.UnmergeIn, statuses=(200, 400, 403, 404, 409)),
    Route("GET", "/mpi/qr-config", cards.qr_config, "registrar", "The active QR configuration"),
    Route("GET", "/mpi/verify/{token}", cards.verify_card, None, "Verify a card QR token (public)",
          statuses=(200, 400, 404, 429), rate_limit="verify"),
    Route("GET", "/mpi/resolve-dhis2/{dhis2_uid}", dhis2.resolve_dhis2, "registrar", "Resolve a DHIS2 UID",
          statuses=(200, 400, 404)),
    Route("GET", "/mpi/{mpi_id}", identities.get_identity, "registrar", "Full details of an identity",
          statuses=(200, 400, 404)),
    Route("PATCH", "/mpi/{mpi_id}", identities.patch_identity, "registrar", "Update an identity",
          schemas.PatchIn, statuses=(200, 400, 404, 409)),
    Route("POST", "/mpi/{mpi_id}/link-dhis2", dhis2.link_dhis2, "registrar", "Link a DHIS2 UID",
          schemas.LinkDhis2In, statuses=(200, 400, 404, 409)),
    Route("POST", "/mpi/{mpi_id}/programmes", identities.enrol_programme, "registrar", "Enrol in a programme",
          schemas.ProgrammeIn, statuses=(200, 201, 400, 404)),
    Route("POST", "/mpi/{mpi_id}/card", cards.issue_card, "registrar", "Issue a card (revokes the previous one)",
          schemas.CardIn, statuses=(201, 400, 404)),
    Route("GET", "/mpi/{mpi_id}/card", cards.get_card, "registrar", "The card of an identity",
          statuses=(200, 400, 404)),
    Route("POST", "/mpi/{mpi_id}/card/revoke", cards.revoke_card, "supervisor", "Revoke the valid card",
          schemas.CardRevokeIn, statuses=(200, 400, 403, 404)),
    Route("GET", "/audit", audit.list_audit, "admin", "Read the audit log back (newest first)",
          query=schemas.AuditQuery, statuses=(200, 400)),
    Route("GET", "/metrics", metrics.metrics, "metrics", "Prometheus metrics: requests, identities, sync, review, dedup"),
]

# The review queue is the hub's: the role appends these (the node keeps its items for sync).
REVIEW_ROUTES: list[Route] = [
    Route("GET", "/review", review.list_review_items, "supervisor", "The review queue",
          query=schemas.ReviewQuery, statuses=(200, 400)),
    Route("POST", "/review/{id}/decision", review.decide_review_item, "supervisor", "Decide a review item",
          schemas.ReviewDecisionIn, statuses=(200, 400, 404, 409)),
]
