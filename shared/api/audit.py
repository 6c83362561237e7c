"""The audit log: GET /audit (admin)."""

from __future__ import annotations

from aiohttp import web

from ..audit import read_audit
from ..keys import store_key
from ..schemas import AuditQuery, parse_query
from .http import actor, answer


async def list_audit(request: web.Request) -> web.Response:
    """GET /audit"""
    query = parse_query(AuditQuery, request.query)
    return answer(await read_audit(request.app[store_key], query, actor(request)))
