"""The console's route table, of the same shape as shared/routes.py: path (under /console),
handler, least role (None: public) and summary. The console middleware reads it as the API's
auth reads ``ROUTES``; each role appends its own pages.

A page that shows or does what an API route does names it (``shows``): its role is then the
higher of the console's own floor (supervisor: the console is theirs) and the API route's,
resolved by ``console_app`` from the application's one route table. So a page never shows a
role what the API keeps from it (the nodes page is for admins, as ``GET /sync/nodes`` is).
"""

from __future__ import annotations

from ..routes import Route
from .views import identities, nodes, review, signin, sync

__all__ = ["CONSOLE_ROUTES", "HUB_CONSOLE_ROUTES", "NODE_CONSOLE_ROUTES"]

CONSOLE_ROUTES: list[Route] = [
    Route("GET", "/", signin.home, "supervisor", "The console's home: the review queue"),
    Route("GET", "/sign-in", signin.sign_in_form, None, "The sign-in form"),
    Route("POST", "/sign-in", signin.sign_in, None, "Sign in with a supervisor's or admin's token"),
    Route("POST", "/sign-out", signin.sign_out, "supervisor", "Sign out"),
    Route("POST", "/language", signin.switch_language, None, "Switch between English and French"),
    Route("GET", "/review", review.queue, "supervisor", "Open review items, filtered, with counts by reason",
          shows="GET /review"),
    Route("GET", "/review/{id}", review.review_item, "supervisor", "One review item, both registrations side by side",
          shows="GET /review"),
    Route("GET", "/identities", identities.search, "supervisor", "Search identities", shows="GET /mpi/search"),
    Route("GET", "/identities/{mpi_id}", identities.identity, "supervisor",
          "An identity (its history from the audit log for the roles that may read GET /audit)",
          shows="GET /mpi/{mpi_id}"),
    Route("POST", "/identities/{mpi_id}/unmerge", identities.unmerge, "supervisor", "Undo the merge of this ID",
          shows="POST /mpi/unmerge"),
]

# The hub decides review items and watches its nodes and dedup.
HUB_CONSOLE_ROUTES: list[Route] = [
    Route("POST", "/review/{id}/decision", review.decide_item, "supervisor", "Merge, or not the same person",
          shows="POST /review/{id}/decision"),
    Route("GET", "/nodes", nodes.nodes, "supervisor", "Enrolled nodes, their state and backlog; the dedup",
          shows="GET /sync/nodes"),
]

# A node shows its review items read-only (the hub decides them) and its sync status.
NODE_CONSOLE_ROUTES: list[Route] = [
    Route("GET", "/sync", sync.sync, "supervisor", "This node's sync with the hub", shows="GET /sync/status"),
]
