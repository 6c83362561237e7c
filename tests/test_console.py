"""The console over HTTP, in process: sessions, CSRF and Origin, languages, unmerge, docs.

The browser tests (test_console_browser.py) drive the same pages in Chromium; these check
the edges a browser does not reach easily (a forged Origin, an idle session, a revoked token).
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from conftest import AMINATA, initialise, make_store

from shared.app import build_app
from shared.auth import Auth
from shared.console import CONSOLE_ROUTES, HUB_CONSOLE_ROUTES, NODE_CONSOLE_ROUTES
from shared.console.i18n import FRENCH, format_date, format_when, negotiate
from shared.console.session import COOKIE, Session, read, seal
from shared.routes import REVIEW_ROUTES
from shared.settings import Settings
from shared.storage import schema as t
from shared.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "shared" / "console" / "templates"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Console:
    client: TestClient[Any, Any]
    tokens: dict[str, str]
    store: Store
    auth: Auth

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def page(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.client.get(path, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text()

    async def csrf(self, path: str = "/console/sign-in") -> str:
        _, html = await self.page(path)
        found = CSRF.search(html)
        assert found, html
        return found.group(1)

    async def post(self, path: str, data: dict[str, str], *, csrf: str | None = None, origin: str | None = "own",
                   headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        token = csrf if csrf is not None else await self.csrf()
        sent = {**(headers or {})}
        if origin is not None:
            sent["Origin"] = self.origin if origin == "own" else origin
        async with self.client.post(path, data={**data, "csrf": token}, headers=sent, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def sign_in(self, role: str = "supervisor") -> None:
        status, location, body = await self.post("/console/sign-in", {"token": self.tokens[role], "next": "/console/review"})
        assert status == 303 and location == "/console/review", body

    async def api(self, method: str, path: str, body: Any = None, role: str = "supervisor") -> tuple[int, Any]:
        async with self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[role]}"}) as r:
            return r.status, await r.json()


@pytest.fixture
async def console(tmp_path: Path, request: pytest.FixtureRequest, aiohttp_client: Any) -> AsyncIterator[Console]:
    """A node-shaped app on SQLite that decides its review items (the hub's console table, less nodes)."""
    store, _ = make_store("sqlite", tmp_path, request)
    await initialise(store)
    auth = Auth(store)
    tokens = {role: await auth.create_token(role, f"c-{role}") for role in ("registrar", "supervisor", "admin")}
    await store.close()
    fresh, _ = make_store("sqlite", tmp_path, request)
    settings = Settings(data_dir=str(tmp_path), audit_flush_seconds=0.05, console_idle_minutes=30)
    routes = [*CONSOLE_ROUTES, *[r for r in HUB_CONSOLE_ROUTES if r.path != "/nodes"]]
    app = build_app(settings, fresh, role="node", extra_routes=REVIEW_ROUTES, console_routes=routes)
    client = await aiohttp_client(app)
    yield Console(client, tokens, fresh, Auth(fresh))
    await client.close()


async def _pair(c: Console, first: str = "Aminata") -> int:
    body = {**AMINATA, "first_name": first, "external_ids": {}, "force_create": True}
    for _ in range(2):
        status, answer = await c.api("POST", "/mpi/register", body, role="registrar")
        assert status == 201, answer
    _, queue = await c.api("GET", "/review")
    return int(queue["items"][-1]["id"])


async def test_pages_without_a_session_show_the_sign_in_form_and_no_data(console: Console) -> None:
    item = await _pair(console)
    for path in ("/console/review", f"/console/review/{item}", "/console/identities?q=aminata", "/console/"):
        status, html = await console.page(path)
        assert status == 401 and 'name="token"' in html and "Diallo" not in html, path


async def test_a_registrar_is_refused_clearly(console: Console) -> None:
    status, _, html = await console.post("/console/sign-in", {"token": console.tokens["registrar"]})
    assert status == 403 and "registrar" in html and 'name="token"' in html
    status, html = await console.page("/console/review")
    assert status == 401


async def test_the_cookie_is_httponly_strict_and_secure_behind_tls(console: Console) -> None:
    async with console.client.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"}) as r:
        cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie and "Path=/console/" in cookie
    async with console.client.get("/console/sign-in") as r:
        assert "Secure" not in r.headers["Set-Cookie"]


async def test_a_cross_site_post_is_refused(console: Console) -> None:
    item = await _pair(console)
    await console.sign_in()
    csrf = await console.csrf("/console/review")
    path = f"/console/review/{item}/decision"
    status, _, html = await console.post(path, {"decision": "merge"}, csrf=csrf, origin="http://evil.example")
    assert status == 403 and "refused" in html
    status, _, _ = await console.post(path, {"decision": "merge"}, csrf=csrf, origin=None,
                                      headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    status, _, _ = await console.post(path, {"decision": "merge"}, csrf="0" * 40)
    assert status == 403
    _, queue = await console.api("GET", "/review")
    assert [i["id"] for i in queue["items"]] == [item]  # nothing was decided
    status, location, _ = await console.post(path, {"decision": "merge"}, csrf=csrf)
    assert status == 303 and location.startswith("/console/review?decided=")


async def test_the_session_ends_after_inactivity_and_with_its_token(console: Console) -> None:
    await console.sign_in()
    status, _ = await console.page("/console/review")
    assert status == 200
    jar = console.client.session.cookie_jar
    value = next(c.value for c in jar if c.key == COOKIE)
    key = bytes.fromhex(console.store.meta["console_secret"])
    session, _ = read(key, value, idle_seconds=60)
    assert session is not None and session.name == "c-supervisor"
    jar.clear()
    idle = seal(key, session.touched(time.time() - 31 * 60))  # MPI_CONSOLE_IDLE_MINUTES=30
    status, html = await console.page("/console/review", headers={"Cookie": f"{COOKIE}={idle}"})
    assert status == 401 and "without activity" in html and "Diallo" not in html
    jar.clear()  # the refusal handed out a fresh visitor's cookie
    recent = seal(key, session.touched(time.time() - 29 * 60))
    status, _ = await console.page("/console/review", headers={"Cookie": f"{COOKIE}={recent}"})
    assert status == 200
    jar.clear()
    await console.sign_in("admin")
    await console.auth.revoke_token("c-admin")
    status, html = await console.page("/console/review")
    assert status == 401


async def test_sign_out_ends_the_session(console: Console) -> None:
    await console.sign_in()
    csrf = await console.csrf("/console/review")
    status, location, _ = await console.post("/console/sign-out", {}, csrf=csrf)
    assert status == 303 and location == "/console/sign-in"
    status, _ = await console.page("/console/review")
    assert status == 401


async def test_unmerge_from_the_identity_page_is_in_its_history(console: Console) -> None:
    item = await _pair(console, "Mariama")
    _, queue = await console.api("GET", "/review")
    older, newer = queue["items"][-1]["mpi_ids"]
    status, answer = await console.api("POST", "/mpi/merge",
                                       {"source_mpi_id": newer, "target_mpi_id": older, "reason": "same mother"})
    assert status == 200, answer
    await console.sign_in()
    status, html = await console.page(f"/console/identities/{older}")
    assert status == 200 and newer in html and "same mother" in html
    csrf = CSRF.search(html).group(1)  # type: ignore[union-attr]
    status, location, _ = await console.post(f"/console/identities/{newer}/unmerge", {"reason": "twins after all"},
                                             csrf=csrf)
    assert status == 303, location
    status, html = await console.page(location)
    assert "twins after all" in html and "active again" in html
    status, body = await console.api("GET", f"/mpi/{newer}")
    assert body["mpi_id"] == newer and "merged_from" not in body
    async with console.store.read() as conn:
        actor = (await conn.execute(sa.select(t.audit_log.c.actor).where(t.audit_log.c.action == "unmerge"))).scalar()
    assert actor == "supervisor:c-supervisor"
    assert item


async def test_the_language_follows_the_browser_and_the_switch(console: Console) -> None:
    status, html = await console.page("/console/sign-in", headers={"Accept-Language": "fr-SN,fr;q=0.9,en;q=0.5"})
    assert '<html lang="fr">' in html and "Jeton" in html and "Se connecter" in html
    csrf = CSRF.search(html).group(1)  # type: ignore[union-attr]
    status, _, _ = await console.post("/console/language", {"lang": "en", "next": "/console/sign-in"}, csrf=csrf)
    assert status == 303
    status, html = await console.page("/console/sign-in", headers={"Accept-Language": "fr"})
    assert '<html lang="en">' in html and "Token" in html


def test_accept_language_negotiation() -> None:
    assert negotiate(None, "fr-FR,fr;q=0.9,en-US;q=0.8") == "fr"
    assert negotiate(None, "en-GB,fr;q=0.5") == "en"
    assert negotiate(None, "wo,fr;q=0.3") == "fr"
    assert negotiate(None, "de") == "en"
    assert negotiate("fr", "en") == "fr"
    assert negotiate("xx", "fr;q=0, en") == "en"


def test_dates_are_written_the_reader_s_way() -> None:
    assert format_date("1995-03-01", "fr") == "1er mars 1995"
    assert format_date("1995-03-15", "en") == "15 March 1995"
    assert format_when("2026-12-02T13:54:40.123Z", "fr") == "2 décembre 2026 à 13:54 UTC"
    assert format_when("2026-12-02T13:54:40Z", "en") == "2 December 2026, 13:54 UTC"


def test_a_forged_or_idle_cookie_is_no_session() -> None:
    key = b"k" * 32
    value = seal(key, Session("sid", 1000.0, "alice", "supervisor", "ab"))
    assert read(key, value, 60, now=1030.0)[0] == Session("sid", 1000, "alice", "supervisor", "ab")
    assert read(key, value, 60, now=1100.0) == (None, True)
    data, _, signature = value.rpartition(".")
    assert read(key, data.replace("a", "b", 1) + "." + signature, 60, now=1030.0) == (None, False)
    assert read(b"x" * 32, value, 60, now=1030.0) == (None, False)


def test_every_phrase_of_the_templates_has_its_french() -> None:
    phrases: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        phrases |= set(re.findall(r'\bt\("([^"]+)"', template.read_text()))
        phrases |= set(re.findall(r"\bt\('([^']+)'", template.read_text()))
    console = ROOT / "shared" / "console"
    for module in [console / "app.py", *console.glob("views/*.py")]:
        # Sentences the views and the middleware hand to templates, which translate them.
        tree = ast.parse(module.read_text())
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        phrases |= {
            node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and node.value[:1].isupper() and " " in node.value and node.value.endswith(".")
        }
    missing = sorted(p for p in phrases if p not in FRENCH and not p.startswith("%"))
    assert not missing, missing


def test_the_readme_documents_every_console_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for route in [*CONSOLE_ROUTES, *HUB_CONSOLE_ROUTES, *NODE_CONSOLE_ROUTES]:
        shown = f"`{route.method} /console{route.path}`"
        assert shown in readme, shown


async def test_an_item_naming_one_identity_shows_its_detail_and_no_decision(console: Console) -> None:
    mpi_id = (await console.api("POST", "/mpi/register", {**AMINATA, "external_ids": {}}, role="registrar"))[1]["mpi_id"]
    async with console.store.write("test") as tx:  # what sync opens for a concurrent edit of one field
        await tx.conn.execute(sa.insert(t.review_item).values(
            reason="concurrent_edit", mpi_ids=f'["{mpi_id}"]', matched_fields='["last_name"]', status="open",
            actor="sync:node-x", created_at=tx.now, detail='{"field": "last_name", "values": ["Diallo", "Dialo"]}'))
    await console.sign_in()
    _, queue = await console.api("GET", "/review")
    item = queue["items"][-1]["id"]
    status, html = await console.page(f"/console/review/{item}")
    assert status == 200 and "Dialo" in html and mpi_id in html
    assert 'value="merge"' not in html and "not a pair" in html
