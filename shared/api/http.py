"""What every handler needs: the decoded body, the caller, a JSON answer."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ..auth import Principal
from ..errors import BadRequest
from ..schemas import parse_body

__all__ = ["actor", "answer", "principal_key", "read_body"]

M = TypeVar("M", bound=BaseModel)
principal_key = web.RequestKey("principal", Principal)


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body validated against ``model`` (413 past the size limit)."""
    raw = await request.read()
    if not raw:
        raise BadRequest("the request needs a JSON body", code="invalid_json")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    return parse_body(model, data)


def actor(request: web.Request) -> str:
    principal = request.get(principal_key)
    return f"{principal.role}:{principal.name}" if principal else "anonymous"


def answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))
