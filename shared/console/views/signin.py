"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

from aiohttp import web

from ...errors import TooManyRequests, Unauthorized
from ...keys import auth_key, settings_key
from ..context import console_principal_key, render, see_other, session_key
from ..i18n import LANGUAGES
from ..session import LANG_COOKIE, new_session

__all__ = ["home", "sign_in", "sign_in_form", "sign_out", "switch_language"]

_HOME = "/console/review"


def _next(value: object) -> str:
    """Where to go after a form: a console page of this server, nothing else."""
    text = str(value or "")
    if not text.startswith("/console/") or "//" in text or "\\" in text:
        return _HOME
    return text


async def home(request: web.Request) -> web.Response:
    """GET /console/"""
    return see_other(_HOME)


async def sign_in_form(request: web.Request) -> web.Response:
    """GET /console/sign-in"""
    return render(request, "signin.html", {"title": "Sign in", "message": "", "next": _next(request.query.get("next"))})


async def sign_in(request: web.Request) -> web.Response:
    """POST /console/sign-in: a supervisor's or admin's token opens a session; a registrar's is refused.

    The token is checked by ``Auth.authenticate``, as a bearer token is: expiry, revocation,
    the failed-authentication limit of this address, and the record of its use.
    """
    form = await request.post()
    token = str(form.get("token", "")).strip()
    target = _next(form.get("next"))
    auth = request.config_dict[auth_key]
    try:
        principal = await auth.authenticate(token, request.remote or "unknown")
    except TooManyRequests as exc:
        page = render(request, "signin.html", {"title": "Sign in", "next": target, "message":
                      "Too many failed sign-ins from this address: try again in a minute."}, 429)
        page.headers.update(exc.headers)
        return page
    except Unauthorized as exc:
        message = "This token has expired." if exc.code == "token_expired" else "This token is not known or was revoked."
        return render(request, "signin.html", {"title": "Sign in", "next": target, "message": message}, 401)
    if not principal.may("supervisor"):
        return render(request, "signin.html", {"title": "Sign in", "next": target, "message":
                      "The console is for supervisors and admins: a registrar's token cannot sign in here."}, 403)
    settings = request.config_dict[settings_key]
    sid = await auth.open_session(token, principal, settings.console_session_hours * 3600)
    request[session_key] = new_session(sid, principal)
    return see_other(target)


async def sign_out(request: web.Request) -> web.Response:
    """POST /console/sign-out: the session's row goes; the cookie, and any copy of it, opens nothing."""
    await request.config_dict[auth_key].end_session(request[session_key].sid, request.get(console_principal_key))
    request[session_key] = new_session()
    return see_other("/console/sign-in")


async def switch_language(request: web.Request) -> web.Response:
    """POST /console/language: the switch keeps its choice in a cookie."""
    form = await request.post()
    lang = str(form.get("lang", ""))
    response = see_other(_next(form.get("next")))
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, path="/console/", max_age=365 * 86400, samesite="Strict", httponly=True)
    return response
