"""build_app: the only place where the API is wired together, for node and hub alike.

Middleware order: logging (outermost), error rendering, auth and role. Audit records are
written by the domain operations themselves, in the transaction of each write.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from .api.http import actor, principal_key
from .auth import Auth
from .cards import Cards
from .console import PREFIX as CONSOLE_PREFIX
from .console import console_app
from .errors import ApiError, Forbidden, PayloadTooLarge, Unauthorized
from .keys import auth_key, cards_key, registry_key, settings_key, store_key
from .matching import Matcher, NameFrequencies, Thresholds
from .openapi import openapi_document
from .registry import Registry
from .routes import ROUTES, Route
from .settings import Settings
from .storage.store import Store

__all__ = ["build_app", "configure_logging"]

log = logging.getLogger("mpi.http")
routes_key = web.AppKey("routes", dict)

Lifetime = Callable[[web.Application], AsyncIterator[None]]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Structured logs: one JSON object a line on stderr (or plain text)."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@web.middleware
async def _logging(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    finally:
        log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    "actor": actor(request),
                }
            },
        )


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return _error(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[settings_key].max_body_bytes
        return _error(PayloadTooLarge(f"the request body is larger than {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = {404: "no such route", 405: f"method {request.method} is not allowed here"}.get(exc.status, exc.reason)
        return _error(ApiError(message, code=code, status=exc.status))
    except Exception:
        log.exception("unexpected error", extra={"fields": {"method": request.method, "path": request.path}})
        return _error(ApiError("internal error: the server logged it", code="internal", status=500))


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    match_info = request.match_info
    route: Route | None = request.app[routes_key].get(match_info.route)
    # The console's pages check their own session (shared/console/app.py), not a bearer token.
    if route is not None and route.role is not None and not request.path.startswith(f"{CONSOLE_PREFIX}/"):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this endpoint needs an Authorization: Bearer <token> header")
        principal = await request.app[auth_key].authenticate(token.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        if not principal.may(route.role):
            raise Forbidden(f"role {principal.role} may not do this: it needs {route.role}")
        request[principal_key] = principal
    response: web.StreamResponse = await handler(request)
    return response


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[openapi_key])


async def _health(request: web.Request) -> web.Response:
    store = request.app[store_key]
    return web.json_response({"status": "ok", "role": request.app[role_key], "node_id": store.node_id})


openapi_key = web.AppKey("openapi", dict)
role_key = web.AppKey("role", str)


def build_app(
    settings: Settings,
    store: Store,
    *,
    role: str,
    extra_routes: Sequence[Route] = (),
    lifetimes: Sequence[Lifetime] = (),
    console_routes: Sequence[Route] = (),
) -> web.Application:
    """The MPI application on ``store``, with the role's own routes and jobs (and console pages)."""
    app = web.Application(middlewares=[_logging, _errors, _auth], client_max_size=settings.max_body_bytes)
    frequencies = NameFrequencies()
    matcher = Matcher(
        frequencies=frequencies,
        thresholds=Thresholds(settings.certain_threshold, settings.probable_threshold, settings.possible_threshold),
    )
    registry = Registry(store, matcher, frequencies, settings.candidate_limit)
    app[settings_key] = settings
    app[store_key] = store
    app[registry_key] = registry
    app[cards_key] = Cards(registry, settings)
    app[auth_key] = Auth(store)
    app[role_key] = role
    table: dict[Any, Route] = {}
    all_routes = [*ROUTES, *extra_routes]
    for route in all_routes:
        added = app.router.add_route(route.method, route.path, route.handler)
        table[added] = route
    app[routes_key] = table
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/health", _health)
    app[openapi_key] = openapi_document(all_routes, role)
    if console_routes:
        app.add_subapp(CONSOLE_PREFIX, console_app(console_routes))

    async def _storage(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        await registry.load_frequencies()
        yield
        await store.close()

    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.extend(lifetimes)
    return app
