"""Identities: register, search, get, patch, programme enrolment."""

from __future__ import annotations

from aiohttp import web

from ..keys import registry_key
from ..schemas import PatchIn, ProgrammeIn, RegisterIn, SearchQuery, parse_query
from .http import actor, answer, read_body


async def register(request: web.Request) -> web.Response:
    """POST /mpi/register"""
    body = await read_body(request, RegisterIn)
    return answer(await request.app[registry_key].register(body, actor(request)), 201)


async def search(request: web.Request) -> web.Response:
    """GET /mpi/search"""
    query = parse_query(SearchQuery, request.query)
    return answer(await request.app[registry_key].search(query, actor(request)))


async def get_identity(request: web.Request) -> web.Response:
    """GET /mpi/{mpi_id}"""
    registry = request.app[registry_key]
    body = await registry.get(request.match_info["mpi_id"], actor(request))
    response = answer(body)
    if "merged_from" in body:
        response.headers["Content-Location"] = f"/mpi/{body['mpi_id']}"
    return response


async def patch_identity(request: web.Request) -> web.Response:
    """PATCH /mpi/{mpi_id}"""
    body = await read_body(request, PatchIn)
    return answer(await request.app[registry_key].patch(request.match_info["mpi_id"], body, actor(request)))


async def enrol_programme(request: web.Request) -> web.Response:
    """POST /mpi/{mpi_id}/programmes"""
    body = await read_body(request, ProgrammeIn)
    created, out = await request.app[registry_key].enrol(request.match_info["mpi_id"], body, actor(request))
    return answer(out, 201 if created else 200)
