"""DHIS2 links: link a UID to an identity, resolve a UID."""

from __future__ import annotations

import re

from aiohttp import web

from ..errors import BadRequest
from ..keys import registry_key
from ..schemas import LinkDhis2In
from .http import actor, answer, read_body

_UID = re.compile(r"[A-Za-z][A-Za-z0-9]{10}")


async def link_dhis2(request: web.Request) -> web.Response:
    """POST /mpi/{mpi_id}/link-dhis2"""
    body = await read_body(request, LinkDhis2In)
    return answer(await request.app[registry_key].link_dhis2(request.match_info["mpi_id"], body, actor(request)))


async def resolve_dhis2(request: web.Request) -> web.Response:
    """GET /mpi/resolve-dhis2/{dhis2_uid}"""
    uid = request.match_info["dhis2_uid"]
    if not _UID.fullmatch(uid):
        raise BadRequest("a DHIS2 UID is 11 letters or digits, starting with a letter", code="invalid_dhis2_uid")
    return answer(await request.app[registry_key].resolve_dhis2(uid, actor(request)))
