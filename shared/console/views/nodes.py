"""The hub's nodes and its dedup."""

from __future__ import annotations

from aiohttp import web

from ..context import render, service

__all__ = ["nodes"]


async def nodes(request: web.Request) -> web.Response:
    """GET /console/nodes: every node, its state and cursors, its backlog; the dedup queue and sweeps."""
    adapter = service(request)
    return render(request, "nodes.html", {
        "title": "Nodes", "nodes": await adapter.nodes(), "details": await adapter.node_details(),
        "dedup": await adapter.dedup_state(),
    })
