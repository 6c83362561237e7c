"""Merges: POST /mpi/merge and POST /mpi/unmerge."""

from __future__ import annotations

from aiohttp import web

from ..keys import registry_key
from ..schemas import MergeIn, UnmergeIn
from .http import actor, answer, read_body


async def merge(request: web.Request) -> web.Response:
    """POST /mpi/merge"""
    body = await read_body(request, MergeIn)
    return answer(await request.app[registry_key].merge(body, actor(request)))


async def unmerge(request: web.Request) -> web.Response:
    """POST /mpi/unmerge"""
    body = await read_body(request, UnmergeIn)
    return answer(await request.app[registry_key].unmerge(body, actor(request)))
