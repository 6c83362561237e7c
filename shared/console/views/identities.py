"""Identities: search, one identity with its history, and unmerge."""

from __future__ import annotations

from aiohttp import web

from ...schemas import SearchQuery, parse_body
from ..context import may, render, see_other, service, who
from .review import FIELDS

__all__ = ["identity", "search", "unmerge"]

_SEARCH = ("q", "mpi_id", "region_code", "date_of_birth", "program", "offset")


async def search(request: web.Request) -> web.Response:
    """GET /console/identities: the search of GET /mpi/search."""
    params = {k: request.query[k].strip() for k in _SEARCH if request.query.get(k, "").strip()}
    result = None
    query = None
    if set(params) - {"offset"}:
        query = parse_body(SearchQuery, {**params, "limit": 50})
        result = await service(request).search(query, who(request))
    return render(request, "identities.html", {
        "title": "Identities", "params": params, "result": result, "offset": query.offset if query else 0,
    })


async def identity(request: web.Request) -> web.Response:
    """GET /console/identities/{mpi_id}: the identity, who was merged into it, and its history."""
    adapter = service(request)
    person = await adapter.identity(request.match_info["mpi_id"], who(request))
    mpi_id = person["mpi_id"]
    return render(request, "identity.html", {
        "title": "Identity", "person": person, "fields": FIELDS,
        "cards": await adapter.cards_of(mpi_id),
        "members": await adapter.merged_into(mpi_id),
        # The family: the people linked to this one (a mother's children), through GET /mpi/search?related_to=.
        "children": (await adapter.search(SearchQuery(related_to=mpi_id, limit=50), who(request)))["items"],
        # The history is the audit log's: for the roles the API lets read it (GET /audit).
        "history": await adapter.history(mpi_id) if may(request, "GET /audit") else None,
        "origin": (await adapter.registrations([mpi_id])).get(mpi_id),
        "unmerged": request.query.get("unmerged", ""),
    })


async def unmerge(request: web.Request) -> web.Response:
    """POST /console/identities/{mpi_id}/unmerge: the merged-away identity is active again."""
    form = await request.post()
    done = await service(request).unmerge(request.match_info["mpi_id"], str(form.get("reason", "")), who(request))
    mpi_id = done["mpi_id"]  # as the domain normalised it
    return see_other(f"/console/identities/{mpi_id}?unmerged={mpi_id}")
