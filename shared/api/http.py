"""What every handler needs: the decoded body, the caller, a JSON answer."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ..auth import Principal
from ..schemas import decode_json, parse_body

__all__ = ["actor", "answer", "principal_key", "read_body", "read_json"]

M = TypeVar("M", bound=BaseModel)
principal_key = web.RequestKey("principal", Principal)


async def read_json(request: web.Request) -> Any:
    """The request's body decoded as JSON (413 past the size limit, 400 when malformed)."""
    return decode_json(await request.read())


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body validated against ``model`` (413 past the size limit)."""
    return parse_body(model, await read_json(request))


def actor(request: web.Request) -> str:
    principal = request.get(principal_key)
    return f"{principal.role}:{principal.name}" if principal else "anonymous"


def answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))
