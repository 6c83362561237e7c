"""Matching: POST /mpi/match."""

from __future__ import annotations

from aiohttp import web

from ..keys import registry_key
from ..schemas import MatchIn
from .http import actor, answer, read_body


async def match(request: web.Request) -> web.Response:
    """POST /mpi/match"""
    body = await read_body(request, MatchIn)
    return answer(await request.app[registry_key].match(body, actor(request)))
