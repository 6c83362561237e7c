"""The node's HTTP link to its hub (``shared.sync.transports.Link``): change sets up, replies down.

A refusal by the hub comes back as the sync error it names (``ChainGap`` with the expected
sequence, ``RevokedKey``...); anything that keeps the bytes from arriving (refused
connection, cut, timeout, a proxy's 502) is ``LinkDown``, which the scheduler retries later.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from shared.sync.errors import from_answer
from shared.sync.transports import LinkDown

__all__ = ["HttpLink"]


class HttpLink:
    """``shared.sync.transports.Link`` over HTTP: every push answers at once."""

    immediate = True

    def __init__(self, hub_url: str, timeout: float = 30.0) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))

    async def _post(self, path: str, data: bytes, content_type: str) -> bytes:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, session.post(
                self.hub_url + path, data=data, headers={"Content-Type": content_type}
            ) as response:
                body = await response.read()
                if response.status < 400:
                    return body
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise LinkDown(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        try:
            answer: Any = json.loads(body)
            code, message = str(answer["status"]), str(answer["error"])
        except (ValueError, KeyError, TypeError):
            raise LinkDown(f"the hub answered {status} without an error body") from None
        if status >= 500 and code not in ("sync_error",):
            raise LinkDown(f"the hub answered {status} {code}: {message}")
        raise from_answer(code, message, answer)

    async def push(self, envelope: bytes) -> bytes:
        return await self._post("/sync/push", envelope, "application/octet-stream")

    async def model(self, request: bytes) -> bytes:
        """A matcher model's file (``shared.sync.modelsync``): checked by the caller against the signed hash."""
        return await self._post("/sync/model", request, "application/octet-stream")

    async def register(self, request: dict[str, Any]) -> dict[str, Any] | None:
        body = await self._post("/sync/enroll", json.dumps(request).encode(), "application/json")
        result: dict[str, Any] = json.loads(body)
        return result
