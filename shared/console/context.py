"""What every console page needs: typed keys, the adapter of this request, and ``render``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..auth import Principal
from ..keys import hub_sync_key, node_sync_key, registry_key, store_key
from ..modelstore import running_version
from ..routes import Route
from .i18n import format_date, format_when, translator
from .service import ConsoleService
from .session import Session, csrf_token

__all__ = [
    "ConsoleState", "console_principal_key", "lang_key", "may", "render", "see_other", "service", "session_key",
    "state_key", "who",
]


@dataclass
class ConsoleState:
    """The console sub-application's own state: its route table, and the API's roles."""

    table: dict[Any, Route]
    paths: frozenset[str]
    decides: bool = False
    # "METHOD /path" of every API route of the application: its least role (None: public).
    api_roles: dict[str, str | None] = field(default_factory=dict)


state_key = web.AppKey("console_state", ConsoleState)
session_key = web.RequestKey("console_session", Session)
lang_key = web.RequestKey("console_lang", str)
console_principal_key = web.RequestKey("console_principal", Principal)


def service(request: web.Request) -> ConsoleService:
    """The adapter over this application's store and domain objects."""
    config = request.config_dict
    return ConsoleService(config[store_key], config[registry_key], config.get(hub_sync_key), config.get(node_sync_key))


def may(request: web.Request, api: str) -> bool:
    """Whether this request's principal may what the API route ``api`` ("GET /audit") does."""
    principal = request.get(console_principal_key)
    roles = request.app[state_key].api_roles
    if principal is None or api not in roles:
        return False
    role = roles[api]
    return role is None or principal.may(role)


def who(request: web.Request) -> str:
    """The actor audit records name: the same ``role:name`` as for a bearer token."""
    principal = request.get(console_principal_key)
    return f"{principal.role}:{principal.name}" if principal else "anonymous"


def _t(table: dict[str, str]) -> Callable[..., str]:
    def t(text: str, *args: Any) -> str:
        out = table.get(text, text)
        return out % args if args else out

    return t


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A page in the request's language, with what the layout needs (navigation, CSRF token, user)."""
    lang = request.get(lang_key, "en")
    state = request.app[state_key]
    session = request.get(session_key)
    principal = request.get(console_principal_key)
    table = translator(lang)
    base = {
        "lang": lang,
        "t": _t(table),
        "tr": lambda word: table.get(word, word) if word else "",
        "when": lambda value: format_when(value, lang),
        "day": lambda value: format_date(value, lang),
        "csrf": csrf_token(session) if session else "",
        "principal": principal,
        "may": lambda api: may(request, api),
        "paths": state.paths,
        "decides": state.decides,
        "here": request.path_qs,
        "matcher": running_version(request.config_dict[registry_key].matcher),  # the version that scores here
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def see_other(location: str) -> web.Response:
    """Post/redirect/get: the answer to a form (or a page that lives elsewhere)."""
    return web.Response(status=303, headers={"Location": location})
