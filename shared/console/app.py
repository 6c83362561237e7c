"""The console sub-application: its route table mounted at /console/, with its own session check.

The API's bearer-token middleware does not look at these routes. Here one middleware does
for the console what auth does for the API, reading the console's table (whose roles come
from the API's, see routes.py): a page asked for without a session shows the sign-in form
and no data; every POST must come from this server (Origin) and carry the session's CSRF
token. The session itself is the server's (``Auth.session``): the cookie holds only its
random id. The middleware also picks the language and turns domain errors into pages.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..api.http import principal_key
from ..auth import ROLES
from ..errors import ApiError
from ..keys import auth_key, settings_key
from ..routes import Route
from .context import ConsoleState, console_principal_key, lang_key, render, session_key, state_key
from .i18n import negotiate
from .session import COOKIE, LANG_COOKIE, Session, csrf_token, new_session, origin_allowed, session_id

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


_ENDED = {
    "idle": "Your session has ended after a time without activity: sign in again.",
    "lifetime": "Your session has reached its longest allowed length: sign in again.",
}


async def _guarded(request: web.Request, handler: Any, route: Route | None, session: Session,
                   ended: str | None) -> web.StreamResponse:
    principal = request.get(console_principal_key)
    if request.method not in _SAFE:
        form = await request.post()
        sent = str(form.get("csrf", ""))
        allowed = origin_allowed(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), _own_origin(request))
        if not allowed or not hmac.compare_digest(sent, csrf_token(session)):
            if principal is None:
                return _sign_in_page(request, "The form had expired: please try again.", 403)
            return render(request, "error.html", {"title": "Refused",
                                                  "message": "This request did not come from a console page and was refused."}, 403)
    if route is not None and route.role is not None:
        if principal is None:
            return _sign_in_page(request, _ENDED.get(ended or "", "Sign in to see this page."), 401)
        if not principal.may(route.role):
            return render(request, "error.html", {"title": "Refused", "message": "Your role may not do this."}, 403)
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def _console(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[state_key]
    settings = request.config_dict[settings_key]
    request[lang_key] = negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language", ""))
    route: Route | None = state.table.get(request.match_info.route)
    if route is None:  # the stylesheet (no session, no cookie, cached), or no such page
        try:
            static: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            return render(request, "error.html", {"title": "Not found", "message": ""}, 404)
        return static
    sid = session_id(request.cookies.get(COOKIE))
    ended: str | None = None
    session = new_session(sid)
    if sid is not None:
        principal, why = await request.config_dict[auth_key].session(sid, settings.console_idle_minutes * 60)
        if principal is not None:
            session = Session(sid, principal)
            request[console_principal_key] = principal
            request[principal_key] = principal  # the request log names the user
        elif why != "none":
            ended, session = why, new_session()  # an ended session's id is not reused, even as a visitor's
    request[session_key] = session
    try:
        response = await _guarded(request, handler, route, session, ended)
    except ApiError as exc:
        title = "Not found" if exc.status == 404 else "Something went wrong"
        response = render(request, "error.html", {"title": title, "message": exc.message}, exc.status)
    except web.HTTPNotFound:
        response = render(request, "error.html", {"title": "Not found", "message": ""}, 404)
    # A browser-session cookie holding the session id only; the server ends the session.
    response.set_cookie(COOKIE, request[session_key].sid, path=f"{PREFIX}/", httponly=True,
                        samesite="Strict", secure=_secure(request))
    response.headers.update(_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def _role(route: Route, api_roles: Mapping[str, str | None]) -> str | None:
    """A page's least role: the higher of its own and that of the API route it shows (if served here)."""
    if route.shows is None or route.shows not in api_roles:
        return route.role  # a node shows its review items, but GET /review is the hub's
    roles = [r for r in (route.role, api_roles[route.shows]) if r is not None]
    return max(roles, key=ROLES.__getitem__) if roles else None


def console_app(routes: Sequence[Route], api_routes: Sequence[Route] = ()) -> web.Application:
    """The console's pages for one role's route table (mounted by build_app at /console/).

    ``api_routes`` is the application's API route table: it gives each page its role.
    """
    api_roles = {f"{r.method} {r.path}": r.role for r in api_routes}
    app = web.Application(middlewares=[_console])
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    table: dict[Any, Route] = {}
    for route in routes:
        resolved = replace(route, role=_role(route, api_roles))
        table[app.router.add_route(route.method, route.path, route.handler)] = resolved
    app.router.add_static("/static", _HERE / "static", append_version=False)
    app[state_key] = ConsoleState(
        table=table,
        paths=frozenset(route.path for route in routes),
        decides=any(route.path == "/review/{id}/decision" for route in routes),
        api_roles=api_roles,
    )
    return app
