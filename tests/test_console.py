"""The console over HTTP, in process: sessions, CSRF and Origin, languages, unmerge, docs.

The browser tests (test_console_browser.py) drive the same pages in Chromium; these check
the edges a browser does not reach easily (a forged Origin, an idle session, a revoked token).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from shared.console.session import COOKIE
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


def _cookie(c: Console) -> str:
    return next(k.value for k in c.client.session.cookie_jar if k.key == COOKIE)


async def _page_with(c: Console, path: str, cookie: str) -> tuple[int, str]:
    """The page as asked for with this cookie alone (another browser holding a copy of it)."""
    c.client.session.cookie_jar.clear()
    return await c.page(path, headers={"Cookie": f"{COOKIE}={cookie}"})


async def _set_session(c: Console, **values: str) -> None:
    async with c.store.write("test") as tx:
        await tx.conn.execute(sa.update(t.console_session).values(**values))


def _ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_an_expired_token_cannot_sign_in(console: Console) -> None:
    token = await console.auth.create_token("admin", "old-admin", expires_at=_ago(1))
    status, _ = await console.api("GET", "/audit", role="admin")
    assert status == 200
    async with console.client.get("/audit", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401 and (await r.json())["status"] == "token_expired"
    status, _, html = await console.post("/console/sign-in", {"token": token, "next": "/console/review"})
    assert status == 401 and "expired" in html and 'name="token"' in html
    status, html = await console.page("/console/review")
    assert status == 401 and "Diallo" not in html


async def test_console_sign_ins_share_the_api_s_failed_authentication_limit(console: Console) -> None:
    await console.sign_in()
    async with console.store.read() as conn:
        audited = (await conn.execute(sa.select(t.audit_log.c.actor).where(t.audit_log.c.action == "console_sign_in"))).all()
    assert [r.actor for r in audited] == ["supervisor:c-supervisor"]
    console.client.session.cookie_jar.clear()
    statuses = [(await console.post("/console/sign-in", {"token": f"mpi_guess{n}"}))[0] for n in range(10)]
    assert statuses == [401] * 10  # MPI_AUTH_FAILURES_PER_MINUTE=10
    status, _, html = await console.post("/console/sign-in", {"token": console.tokens["admin"]})
    assert status == 429 and "Too many failed sign-ins" in html  # even a good token, from this address
    status, _ = await console.api("GET", "/review")
    assert status == 429  # and the API's bearer check counts the same failures


async def test_a_session_ends_when_its_token_expires(console: Console) -> None:
    await console.sign_in("admin")
    assert (await console.page("/console/review"))[0] == 200
    async with console.store.write("test") as tx:
        await tx.conn.execute(sa.update(t.api_token).where(t.api_token.c.name == "c-admin").values(expires_at=_ago(1)))
    assert (await console.page("/console/review"))[0] == 401


async def test_a_cookie_copied_before_sign_out_is_worthless_after_it(console: Console) -> None:
    await console.sign_in()
    copied = _cookie(console)
    assert (await console.page("/console/review"))[0] == 200
    csrf = await console.csrf("/console/review")
    status, location, _ = await console.post("/console/sign-out", {}, csrf=csrf)
    assert status == 303 and location == "/console/sign-in"
    assert (await console.page("/console/review"))[0] == 401
    status, html = await _page_with(console, "/console/review", copied)
    assert status == 401 and 'name="token"' in html
    async with console.store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.console_session))).scalar() == 0


async def test_a_cookie_is_worthless_once_its_token_is_revoked(console: Console) -> None:
    await console.sign_in("admin")
    copied = _cookie(console)
    assert (await _page_with(console, "/console/review", copied))[0] == 200
    await console.auth.revoke_token("c-admin")  # in the same transaction, its sessions go
    status, _ = await _page_with(console, "/console/review", copied)
    assert status == 401


async def test_a_session_ends_when_idle_and_at_its_longest_lifetime(console: Console) -> None:
    await console.sign_in()
    async with console.store.read() as conn:
        row = (await conn.execute(sa.select(t.console_session))).one()
    def moment(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    assert round(moment(row.expires_at) - moment(row.created_at)) == 12 * 3600  # MPI_CONSOLE_SESSION_HOURS
    kept = _cookie(console)
    await _set_session(console, seen_at=_ago(29))  # MPI_CONSOLE_IDLE_MINUTES=30
    assert (await _page_with(console, "/console/review", kept))[0] == 200
    await _set_session(console, seen_at=_ago(31))
    status, html = await _page_with(console, "/console/review", kept)
    assert status == 401 and "without activity" in html and "Diallo" not in html
    # However active, a session ends at its maximum lifetime.
    console.client.session.cookie_jar.clear()
    await console.sign_in()
    kept = _cookie(console)
    await _set_session(console, created_at=_ago(12 * 60 + 1), expires_at=_ago(1))
    status, html = await _page_with(console, "/console/review", kept)
    assert status == 401 and "longest allowed length" in html


def _old_style_cookie(key: bytes, name: str, role: str, token_hash: str) -> str:
    """A cookie as the console signed them before sessions were kept on the server."""
    payload = {"sid": "x" * 24, "seen": int(time.time()), "name": name, "role": role, "th": token_hash}
    data = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
    return f"{data.decode()}.{hmac.new(key, data, hashlib.sha256).hexdigest()}"


async def test_a_copy_of_the_database_opens_no_console_session(console: Console, tmp_path: Path) -> None:
    """A thief with a backup of the node's database (and no browser) tries every value it holds."""
    await console.sign_in("admin")
    await console.page("/console/review")
    copy = tmp_path / "stolen.sqlite3"
    source = sqlite3.connect(tmp_path / "mpi.sqlite3")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    tables = {r[0] for r in target.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    values = {str(v) for table in sorted(tables & {"node_meta", "console_session", "api_token"})
              for row in target.execute(f"SELECT * FROM {table}") for v in row if isinstance(v, str)}  # noqa: S608
    token_hashes = [r[0] for r in target.execute("SELECT token_hash FROM api_token WHERE role = 'admin'")]
    target.close()
    assert token_hashes and not any(v.startswith("mpi_") for v in values)
    tried = 0
    for value in sorted(values):
        cookies = [value]
        if re.fullmatch(r"[0-9a-f]{64}", value):
            cookies += [_old_style_cookie(bytes.fromhex(value), "c-admin", "admin", th) for th in token_hashes]
        for cookie in cookies:
            status, html = await _page_with(console, "/console/review", cookie)
            assert status == 401 and 'name="token"' in html, value
            tried += 1
    assert tried > len(values)


async def test_the_console_keeps_what_the_api_keeps_for_admins(console: Console, tmp_path: Path,
                                                               request: pytest.FixtureRequest,
                                                               aiohttp_client: Any) -> None:
    """One role table: the nodes page is for admins, as GET /sync/nodes is (the hub's console)."""
    from hub.app import HUB_ROUTES

    store, _ = make_store("sqlite", tmp_path, request)
    settings = Settings(data_dir=str(tmp_path), audit_flush_seconds=0.05)
    app = build_app(settings, store, role="hub", extra_routes=[*REVIEW_ROUTES, *HUB_ROUTES],
                    console_routes=[*CONSOLE_ROUTES, *HUB_CONSOLE_ROUTES])
    hub = Console(await aiohttp_client(app), console.tokens, store, Auth(store))
    await hub.sign_in("supervisor")
    status, html = await hub.page("/console/nodes")
    assert status == 403 and "may not" in html
    status, html = await hub.page("/console/review")
    assert status == 200 and "/console/nodes" not in html
    await hub.client.close()


async def test_unmerge_from_the_identity_page_is_in_its_history(console: Console) -> None:
    item = await _pair(console, "Mariama")
    _, queue = await console.api("GET", "/review")
    older, newer = queue["items"][-1]["mpi_ids"]
    status, answer = await console.api("POST", "/mpi/merge",
                                       {"source_mpi_id": newer, "target_mpi_id": older, "reason": "same mother"})
    assert status == 200, answer
    await console.sign_in()
    status, html = await console.page(f"/console/identities/{older}")
    # The history is the audit log's, which the API keeps for admins (GET /audit).
    assert status == 200 and newer in html and "same mother" not in html and "only an admin" in html
    csrf = CSRF.search(html).group(1)  # type: ignore[union-attr]
    status, location, _ = await console.post(f"/console/identities/{newer}/unmerge", {"reason": "twins after all"},
                                             csrf=csrf)
    assert status == 303, location
    status, html = await console.page(location)
    assert "active again" in html
    console.client.session.cookie_jar.clear()
    await console.sign_in("admin")
    status, html = await console.page(location)
    assert "twins after all" in html and "same mother" in html
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


async def test_every_page_names_the_model_that_scores_and_follows_a_swap(console: Console) -> None:
    """The footer names the matcher model; one made current in the database (as sync or
    ``mpi-hub model use`` do) scores from the next request on, and the pages say so."""
    import io

    import numpy as np

    from shared import modelstore
    from shared.matching import default_model

    await console.sign_in()
    status, html = await console.page("/console/review")
    assert status == 200 and f"Matcher model: <span class=\"mono\">{default_model().version}</span>" in html
    with np.load(io.BytesIO(modelstore._shipped()[1])) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["version"] = np.array("learned-2026-12-06-s1-swapped")
    data = io.BytesIO()
    np.savez_compressed(data, **arrays)
    async with console.store.write("test") as tx:
        await modelstore.save_model(tx, data.getvalue(), {}, make_current=True)
    async with console.client.get("/health") as r:
        assert (await r.json())["matcher"] == "learned-2026-12-06-s1-swapped"
    status, html = await console.page("/console/identities")
    assert status == 200 and "learned-2026-12-06-s1-swapped</span>" in html
