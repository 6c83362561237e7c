"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

import hashlib

from aiohttp import web

from ..context import render, see_other, service, session_key
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
    """POST /console/sign-in: a supervisor's or admin's token opens a session; a registrar's is refused."""
    form = await request.post()
    token = str(form.get("token", "")).strip()
    target = _next(form.get("next"))
    principal = await service(request).principal(hashlib.sha256(token.encode()).hexdigest()) if token else None
    if principal is None:
        return render(request, "signin.html", {"title": "Sign in", "next": target,
                                               "message": "This token is not known or was revoked."}, 401)
    if not principal.may("supervisor"):
        return render(request, "signin.html", {"title": "Sign in", "next": target, "message":
                      "The console is for supervisors and admins: a registrar's token cannot sign in here."}, 403)
    request[session_key] = new_session(name=principal.name, role=principal.role,
                                       token_hash=hashlib.sha256(token.encode()).hexdigest())
    return see_other(target)


async def sign_out(request: web.Request) -> web.Response:
    """POST /console/sign-out"""
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
