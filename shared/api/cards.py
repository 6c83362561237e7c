"""Cards: issue, read, revoke, the public verify and the QR configuration."""

from __future__ import annotations

from aiohttp import web

from ..errors import NotFound
from ..keys import cards_key
from ..schemas import CardIn, CardRevokeIn
from .http import actor, answer, read_body


async def issue_card(request: web.Request) -> web.Response:
    """POST /mpi/{mpi_id}/card"""
    body = await read_body(request, CardIn)
    return answer(await request.app[cards_key].issue(request.match_info["mpi_id"], body, actor(request)), 201)


async def get_card(request: web.Request) -> web.Response:
    """GET /mpi/{mpi_id}/card"""
    return answer(await request.app[cards_key].get(request.match_info["mpi_id"], actor(request)))


async def revoke_card(request: web.Request) -> web.Response:
    """POST /mpi/{mpi_id}/card/revoke"""
    raw = await request.read()
    body = await read_body(request, CardRevokeIn) if raw else CardRevokeIn()
    return answer(await request.app[cards_key].revoke(request.match_info["mpi_id"], body, actor(request)))


async def verify_card(request: web.Request) -> web.Response:
    """GET /mpi/verify/{token} (public)"""
    try:
        return answer(await request.app[cards_key].verify(request.match_info["token"]))
    except NotFound as exc:
        # The reference gives verify's 404 its own shape: status and message.
        return answer({"status": "not_found", "message": exc.message}, 404)


async def qr_config(request: web.Request) -> web.Response:
    """GET /mpi/qr-config"""
    return answer(request.app[cards_key].qr_config())
