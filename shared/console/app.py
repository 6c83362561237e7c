"""The console sub-application: its route table mounted at /console/, with its own session check.

The API's bearer-token middleware does not look at these routes. Here one middleware does
for the console what auth does for the API, reading the console's own table: the route
declares the least role (None: public); a page asked for without a session shows the
sign-in form and no data; every POST must come from this server (Origin) and carry the
session's CSRF token. It also picks the language, turns domain errors into pages, and
slides the session's idle expiry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..api.http import principal_key
from ..errors import ApiError
from ..keys import settings_key
from ..routes import Route
from .context import ConsoleState, console_principal_key, lang_key, render, service, session_key, state_key
from .i18n import negotiate
from .session import COOKIE, LANG_COOKIE, Session, csrf_token, new_session, origin_allowed, read, seal

__all__ = ["PREFIX", "console_app"]

PREFIX = "/console"
_HERE = Path(__file__).resolve().parent
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


def _own_origin(request: web.Request) -> str:
    return f"{'https' if _secure(request) else 'http'}://{request.host}"


def _sign_in_page(request: web.Request, message: str, status: int) -> web.Response:
    """The sign-in form, in place of whatever was asked for; it comes back there after."""
    target = request.path_qs if request.method in _SAFE and request.path != f"{PREFIX}/sign-in" else ""
    return render(request, "signin.html", {"title": "Sign in", "message": message, "next": target}, status)


async def _guarded(request: web.Request, handler: Any, route: Route | None, session: Session,
                   expired: bool) -> web.StreamResponse:
    principal = request.get(console_principal_key)
    state = request.app[state_key]
    assert state.key is not None
    if request.method not in _SAFE:
        form = await request.post()
        sent = str(form.get("csrf", ""))
        allowed = origin_allowed(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), _own_origin(request))
        if not allowed or sent != csrf_token(state.key, session):
            if principal is None:
                return _sign_in_page(request, "The form had expired: please try again.", 403)
            return render(request, "error.html", {"title": "Refused",
                                                  "message": "This request did not come from a console page and was refused."}, 403)
    if route is not None and route.role is not None:
        if principal is None:
            message = "Your session has ended after a time without activity: sign in again." if expired else \
                "Sign in to see this page."
            return _sign_in_page(request, message, 401)
        if not principal.may(route.role):
            return render(request, "error.html", {"title": "Refused", "message": "Your role may not do this."}, 403)
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def _console(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[state_key]
    settings = request.config_dict[settings_key]
    adapter = service(request)
    if state.key is None:
        async with state.key_lock:  # two first requests at once must not make two keys
            if state.key is None:
                state.key = await adapter.signing_key(settings.console_secret)
    request[lang_key] = negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language", ""))
    now = time.time()
    session, expired = read(state.key, request.cookies.get(COOKIE), settings.console_idle_minutes * 60, now)
    if session is not None and session.signed_in:
        principal = await adapter.principal(session.token_hash or "")
        if principal is None or principal.role != session.role:
            session, expired = None, False  # the token was revoked: the session ends with it
        else:
            request[console_principal_key] = principal
            request[principal_key] = principal  # the request log names the user
    request[session_key] = session or new_session(now)
    route: Route | None = state.table.get(request.match_info.route)
    try:
        response = await _guarded(request, handler, route, request[session_key], expired)
    except ApiError as exc:
        title = "Not found" if exc.status == 404 else "Something went wrong"
        response = render(request, "error.html", {"title": title, "message": exc.message}, exc.status)
    except web.HTTPNotFound:
        response = render(request, "error.html", {"title": "Not found", "message": ""}, 404)
    if route is None:
        return response  # the stylesheet: no cookie, cached
    final = request[session_key]
    # A browser-session cookie: the server ends it when idle, and can then say so.
    response.set_cookie(COOKIE, seal(state.key, final.touched(now)), path=f"{PREFIX}/", httponly=True,
                        samesite="Strict", secure=_secure(request))
    response.headers.update(_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def console_app(routes: Sequence[Route]) -> web.Application:
    """The console's pages for one role's route table (mounted by build_app at /console/)."""
    app = web.Application(middlewares=[_console])
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    table: dict[Any, Route] = {}
    for route in routes:
        table[app.router.add_route(route.method, route.path, route.handler)] = route
    app.router.add_static("/static", _HERE / "static", append_version=False)
    app[state_key] = ConsoleState(
        table=table,
        paths=frozenset(route.path for route in routes),
        decides=any(route.path == "/review/{id}/decision" for route in routes),
    )
    return app
