"""build_app: the only place where the API is wired together, for node and hub alike, over the
services of the composition root (``shared/compose.py``).

Middleware order: logging (outermost), error rendering, body size and time, rate limits with
auth and role, control characters in paths and queries. Audit records are
written by the domain operations themselves, in the transaction of each write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from . import modelstore
from .api.http import actor, principal_key
from .auth import Auth
from .compose import Services, compose
from .console import PREFIX as CONSOLE_PREFIX
from .console import console_app
from .errors import ApiError, Forbidden, PayloadTooLarge, TooManyRequests
from .fhir import FHIR_ROUTES, fhir_errors, fhir_openapi_paths
from .keys import (
    auth_key,
    cards_key,
    dedup_runner_key,
    hub_sync_key,
    node_sync_key,
    registry_key,
    services_key,
    settings_key,
    store_key,
)
from .logs import configure_logging
from .metrics import HttpMetrics, http_metrics_key, identity_metrics, metric_sources_key
from .openapi import openapi_document
from .ratelimit import RateLimiter
from .redact import exception_text
from .routes import ROUTES, Route
from .schemas import check_text
from .settings import Settings
from .storage import schema as t
from .storage.store import Store
from .sync.errors import LinkDown, SyncError, http_answer

__all__ = ["HealthCheck", "build_app", "configure_logging", "route_template"]

log = logging.getLogger("mpi.http")
routes_key = web.AppKey("routes", dict)

Lifetime = Callable[[web.Application], AsyncIterator[None]]


def route_template(request: web.Request) -> str:
    """The route a request matched, as declared (``/mpi/{mpi_id}``): what logs may name."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


@web.middleware
async def _logging(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    finally:
        seconds = time.perf_counter() - started
        route = route_template(request)
        request.config_dict[http_metrics_key].observe(request.method, route, status, seconds)
        log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "actor": actor(request),
                }
            },
        )


def _error(exc: ApiError) -> web.Response:
    response = web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    if exc.status == 408:  # the rest of that body cannot be told from the next request
        response.force_close()
    return response


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return _error(exc)
    except (SyncError, LinkDown) as exc:
        status, body = http_answer(exc)  # the one table of sync errors
        return web.json_response(body, status=status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[settings_key].max_body_bytes
        return _error(PayloadTooLarge(f"the request body is larger than {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = {404: "no such route", 405: f"method {request.method} is not allowed here"}.get(exc.status, exc.reason)
        error = ApiError(message, code=code, status=exc.status)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            error.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return _error(error)
    except Exception:
        log.exception("unexpected error", extra={"fields": {"method": request.method, "route": route_template(request)}})
        return _error(ApiError("internal error: the server logged it", code="internal", status=500))


@web.middleware
async def _body(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bodies are refused by their announced size before any byte is read, and read in time.

    A client announcing gigabytes gets 413 at once (aiohttp then discards what it sends for at
    most its lingering time, 10 s, and closes); one trickling a body for longer than
    ``body_timeout_seconds`` gets 408, then its connection is closed. Handlers read from memory.
    """
    settings = request.app[settings_key]
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is larger than {settings.max_body_bytes} bytes")
    if request.body_exists:
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                await request.read()
        except TimeoutError:
            raise ApiError(
                f"the request body did not arrive within {settings.body_timeout_seconds:g} s",
                code="request_timeout", status=408,
            ) from None
    response: web.StreamResponse = await handler(request)
    return response


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def _limited(limiter: RateLimiter, request: web.Request, what: str, *, spend: bool) -> None:
    wait = limiter.spend(_client(request)) if spend else limiter.retry_after(_client(request))
    if wait:
        raise TooManyRequests(f"too many {what} from this address: retry in {wait} s", retry_after=wait)


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    match_info = request.match_info
    route: Route | None = request.app[routes_key].get(match_info.route)
    limiters = request.app[limiters_key]
    if route is not None and route.rate_limit is not None:
        _limited(limiters[route.rate_limit], request, "requests", spend=True)
    # The console's pages check their own session (shared/console/app.py), not a bearer header;
    # its sign-in goes through the same Auth.authenticate.
    if route is not None and route.role is not None and not request.path.startswith(f"{CONSOLE_PREFIX}/"):
        auth = request.app[auth_key]
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = await auth.authenticate(token.strip() if scheme.lower() == "bearer" else "", _client(request))
        if not principal.may(route.role):
            raise Forbidden(f"role {principal.role} may not do this: it needs {route.role}")
        request[principal_key] = principal
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def _plain_text(request: web.Request, handler: Any) -> web.StreamResponse:
    """Path and query values with control characters are refused before any handler sees them."""
    for name, value in request.match_info.items():
        check_text(name, value)
    for name, value in request.query.items():
        check_text(f"query parameter {name!r}", name)
        check_text(name, value)
    response: web.StreamResponse = await handler(request)
    return response


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[openapi_key])


HealthCheck = Callable[[web.Application], Awaitable[dict[str, Any]]]
_HEALTH_SECONDS = 5.0


async def _health(request: web.Request) -> web.Response:
    """GET /health: 200 when the database answers (and what the role adds), else 503."""
    app = request.app
    store = app[store_key]
    matcher = app[registry_key].matcher
    body: dict[str, Any] = {
        "status": "ok",
        "role": app[role_key],
        "node_id": store.node_id,
        "matcher": getattr(matcher, "version", "fellegi-sunter"),  # the model version that scores here
    }
    try:
        async with asyncio.timeout(_HEALTH_SECONDS):
            async with store.read() as conn:
                await conn.execute(sa.select(t.node_meta.c.value).where(t.node_meta.c.key == "node_id"))
            body["database"] = "ok"
            # The model another process made current (mpi-hub model train/use, mpi-node sync) scores from now on.
            body["matcher"] = await modelstore.refresh(store, matcher)
            for check in app[health_checks_key]:
                body.update(await check(app))
    except Exception as exc:
        log.warning("health check failed", extra={"fields": {"error": exception_text(exc)}})
        raise ApiError("the database cannot be read: this server cannot work", code="unavailable", status=503,
                       role=app[role_key], database="unavailable") from None
    return web.json_response(body)


openapi_key = web.AppKey("openapi", dict)
role_key = web.AppKey("role", str)
health_checks_key = web.AppKey("health_checks", list)
limiters_key = web.AppKey("limiters", dict)


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    # No versions of aiohttp or Python for a scanner to match against.
    response.headers["Server"] = "mpi"


def build_app(
    services: Services | Settings,
    store: Store | None = None,
    *,
    role: str | None = None,
    extra_routes: Sequence[Route] = (),
    lifetimes: Sequence[Lifetime] = (),
    health: Sequence[HealthCheck] = (),
    console_routes: Sequence[Route] = (),
) -> web.Application:
    """The MPI application over a process's ``services`` (``shared.compose``), with the role's own
    routes, jobs, health checks and console pages.

    The services' role extras (the hub's sync and dedup runner, the node's sync) are the app's
    as they come; the services open before the role's lifetimes start and close after they end.
    A health check returns fields for ``GET /health`` (the node adds how far behind its sync
    is); one that raises makes the answer 503. ``build_app(settings, store, role=...)``: the
    shared services alone over a store the caller built (tests).
    """
    if isinstance(services, Settings):
        if store is None or role is None:
            raise TypeError("build_app(settings, store, role=...) needs the store and the role")
        services = compose(services, role, store=store, extras=False)
    settings = services.settings
    registry = services.registry
    # fhir_errors renders errors under /fhir as OperationOutcome (auth's included); it stands aside elsewhere.
    app = web.Application(middlewares=[_logging, _errors, fhir_errors, _body, _auth, _plain_text], client_max_size=settings.max_body_bytes)
    app[services_key] = services
    app[settings_key] = settings
    app[store_key] = services.store
    app[registry_key] = registry
    app[cards_key] = services.cards
    if services.hub_sync is not None:
        app[hub_sync_key] = services.hub_sync
    if services.node_sync is not None:
        app[node_sync_key] = services.node_sync
    if services.runner is not None:
        app[dedup_runner_key] = services.runner
    app[role_key] = services.role
    app[health_checks_key] = list(health)
    app[http_metrics_key] = HttpMetrics()
    app[metric_sources_key] = [identity_metrics]  # the roles add theirs
    app[limiters_key] = {
        "verify": RateLimiter(settings.verify_rate_per_minute),
        "enroll": RateLimiter(settings.enroll_rate_per_minute),
        "auth_failures": RateLimiter(settings.auth_failures_per_minute),
    }
    # One check of tokens for the API and the console, with the one failed-authentication limit.
    app[auth_key] = Auth(services.store, failures=app[limiters_key]["auth_failures"])
    app.on_response_prepare.append(_server_header)
    table: dict[Any, Route] = {}
    all_routes = [*ROUTES, *extra_routes]
    for route in [*all_routes, *FHIR_ROUTES]:
        added = app.router.add_route(route.method, route.path, route.handler)
        table[added] = route
    app[routes_key] = table
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/health", _health)
    app[openapi_key] = openapi_document(all_routes, services.role)
    app[openapi_key]["paths"].update(fhir_openapi_paths(FHIR_ROUTES))
    if console_routes:
        app.add_subapp(CONSOLE_PREFIX, console_app(console_routes, all_routes))

    async def _services(app: web.Application) -> AsyncIterator[None]:
        await app[services_key].open()
        yield
        await app[services_key].close()

    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.extend(lifetimes)
    return app
