"""POST /sync/push and POST /sync/pull: signed change sets in, acknowledgements and feed out.

POST /sync/model: the file of the matcher model the hub names in its replies (``shared.sync.modelsync``).

These routes take no bearer token: the envelope's Ed25519 signature by an enrolled node key
is the authentication. A refusal is a ``SyncError``, which the app's error middleware answers
in the one error shape, its status and code from ``shared.sync.errors.STATUS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.keys import hub_sync_key
from shared.sync.modelsync import model_file

__all__ = ["model", "pull", "push"]


async def _binary(request: web.Request, action: Callable[[bytes], Awaitable[bytes]]) -> web.Response:
    reply = await action(await request.read())
    # A short Server header: an idle node's round is counted in bytes.
    return web.Response(body=reply, content_type="application/octet-stream", headers={"Server": "mpi"})


async def push(request: web.Request) -> web.Response:
    """POST /sync/push"""
    return await _binary(request, request.app[hub_sync_key].receive)


async def pull(request: web.Request) -> web.Response:
    """POST /sync/pull"""
    return await _binary(request, request.app[hub_sync_key].pull)


async def model(request: web.Request) -> web.Response:
    """POST /sync/model"""
    hub = request.app[hub_sync_key]
    return await _binary(request, lambda raw: model_file(hub, raw))
