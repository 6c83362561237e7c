"""Node enrolment: POST /sync/enroll (a node registers its key) and GET /sync/nodes (admin)."""

from __future__ import annotations

from aiohttp import web

from shared.api.http import answer, read_json
from shared.errors import BadRequest
from shared.keys import hub_sync_key

__all__ = ["list_nodes", "register_node"]


async def register_node(request: web.Request) -> web.Response:
    """POST /sync/enroll"""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return answer(await request.app[hub_sync_key].register(body))


async def list_nodes(request: web.Request) -> web.Response:
    """GET /sync/nodes"""
    return answer({"nodes": await request.app[hub_sync_key].nodes()})
