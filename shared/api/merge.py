"""Merges: POST /mpi/merge."""

from __future__ import annotations

from aiohttp import web

from ..keys import registry_key
from ..schemas import MergeIn
from .http import actor, answer, read_body


async def merge(request: web.Request) -> web.Response:
    """POST /mpi/merge"""
    body = await read_body(request, MergeIn)
    return answer(await request.app[registry_key].merge(body, actor(request)))
