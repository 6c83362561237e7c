"""The console in a real browser: Chromium (the Debian package) driven by Playwright.

One hub process on a fresh PostgreSQL database, with one node enrolled and synced, and one
browser for the whole module. Each test makes the review items it decides, so the tests do
not depend on their order. Set MPI_CONSOLE_SCREENSHOTS=DIR to keep screenshots of the pages.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster import Hub, Node, sync_now
from conftest import pg_url
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from shared.auth import Auth
from shared.storage.dialects import PostgresDialect
from shared.storage.store import Store

CHROMIUM = os.environ.get("MPI_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = os.environ.get("MPI_CONSOLE_SCREENSHOTS")
PAGE_BUDGET = 150 * 1024


@dataclass
class Cluster:
    hub: Hub
    supervisor: str
    registrar: str
    tmp: Path

    def pair(self, first: str, last: str) -> tuple[str, str, int]:
        """Two registrations of one person at the hub (the second forced): one open review item."""
        person = {"first_name": first, "last_name": last, "date_of_birth": "1988-07-21", "gender": "F",
                  "region_code": "DKR", "country_code": "SN", "phone_number": "+221771234567"}
        ids = []
        for force in (False, True):
            status, answer = self.hub.call("POST", "/mpi/register", {**person, "force_create": force}, self.registrar)
            assert status == 201, answer
            ids.append(answer["mpi_id"])
        status, queue = self.hub.call("GET", "/review", token=self.supervisor)
        item = next(i["id"] for i in queue["items"] if set(i["mpi_ids"]) == set(ids))
        return ids[0], ids[1], int(item)


async def _tokens(url: str) -> tuple[str, str]:
    """A supervisor's and a registrar's token, made as the CLI makes them (in process: each CLI start costs seconds)."""
    store = Store(PostgresDialect(url))
    await store.open()
    try:
        auth = Auth(store)
        return await auth.create_token("supervisor", "sup"), await auth.create_token("registrar", "clerk")
    finally:
        await store.close()


@pytest.fixture(scope="module")
def cluster(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A hub process on its own database, for the whole module."""
    name = f"mpi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    hub = Hub(pg_url(name))
    try:
        # Playwright's sync API may hold this thread's event loop already: the store gets a thread of its own.
        with ThreadPoolExecutor(1) as pool:
            supervisor, registrar = pool.submit(asyncio.run, _tokens(hub.database_url)).result()
        hub.start()
        yield Cluster(hub, supervisor, registrar, tmp_path_factory.mktemp("console"))
    finally:
        hub.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> Iterator[Node]:
    """A node enrolled with the hub, serving, with one person registered twice (a force_create item), synced."""
    enrolled = Node(cluster.tmp / "dakar", cluster.hub.enroll("dakar", "DKR", cluster.tmp / "dakar.json", cluster.hub.url))
    try:
        enrolled.start()
        for _ in range(2):
            enrolled.register(first_name="Ndeye", last_name="Faye", date_of_birth="1979-02-11", gender="F")
        sync_now(enrolled)
        yield enrolled
    finally:
        enrolled.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-GB")
    yield ctx
    ctx.close()


def sign_in(page: Page, base: str, token: str, path: str = "/console/review") -> None:
    page.goto(base + path)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(base + path) + "$"))


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_no_session_no_data_and_a_registrar_is_refused(context: BrowserContext, cluster: Cluster) -> None:
    _, _, item = cluster.pair("Coumba", "Ndour")
    page = context.new_page()
    response = page.goto(f"{cluster.hub.url}/console/review/{item}")
    assert response is not None and response.status == 401
    expect(page.get_by_label("Token")).to_be_visible()
    assert "Ndour" not in page.content()
    page.get_by_label("Token").fill(cluster.registrar)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("registrar")
    assert "Ndour" not in page.content()
    page.get_by_label("Token").fill(cluster.supervisor)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/console/review/{item}")  # back where the supervisor was going
    expect(page.get_by_role("heading", name=f"Review item #{item}")).to_be_visible()
    expect(page.get_by_text("Ndour").first).to_be_visible()


def test_decisions_made_in_the_browser_are_seen_through_the_api(context: BrowserContext, cluster: Cluster) -> None:
    a1, a2, different = cluster.pair("Astou", "Mbengue")
    b1, b2, same = cluster.pair("Yacine", "Thiam")
    page = context.new_page()
    sign_in(page, cluster.hub.url, cluster.supervisor)
    expect(page.locator(f'a[href="/console/review/{different}"]').first).to_be_visible()

    page.goto(f"{cluster.hub.url}/console/review/{different}")
    expect(page.locator("table.compare")).to_contain_text("Mbengue")
    shot(page, "review-item")
    page.get_by_label("Reason (optional)").fill("twins, seen at the post")
    page.get_by_role("button", name="Not the same person").click()
    page.wait_for_url(re.compile(r"/console/review\?decided="))
    expect(page.get_by_role("status")).to_contain_text(f"Item {different} was decided")
    expect(page.locator(f'a[href="/console/review/{different}"]')).to_have_count(0)

    page.goto(f"{cluster.hub.url}/console/review/{same}")
    page.get_by_role("button", name="Merge").click()
    page.wait_for_url(re.compile(r"/console/review\?decided="))
    expect(page.locator(f'a[href="/console/review/{same}"]')).to_have_count(0)

    _, queue = cluster.hub.call("GET", "/review", token=cluster.supervisor)
    assert {different, same}.isdisjoint(i["id"] for i in queue["items"])
    status, merged = cluster.hub.call("GET", f"/mpi/{b2}", token=cluster.supervisor)
    assert status == 200 and merged["mpi_id"] == b1 and merged["merged_from"] == b2
    _, kept = cluster.hub.call("GET", f"/mpi/{a2}", token=cluster.supervisor)
    assert kept["mpi_id"] == a2 and "merged_from" not in kept
    decisions = cluster.hub.sql(
        "SELECT actor, detail FROM audit_log WHERE action = 'review_decision' ORDER BY pk")
    mine = [(actor, detail) for actor, detail in decisions if f'"item": {different},' in detail or f'"item": {same},' in detail]
    assert [actor for actor, _ in mine] == ["supervisor:sup", "supervisor:sup"]
    assert "twins, seen at the post" in mine[0][1]

    page.goto(f"{cluster.hub.url}/console/identities/{b1}")
    expect(page.get_by_role("button", name="Unmerge")).to_be_visible()
    # The history is the audit log's: an admin's, as GET /audit is.
    expect(page.get_by_text("only an admin may read")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, cluster.hub.url, cluster.hub.token, f"/console/identities/{b1}")
    expect(page.locator("table.list")).to_contain_text("supervisor:sup")  # the merge is in the survivor's history
    assert a1


def test_the_nodes_page_shows_the_enrolled_node_and_the_dedup(context: BrowserContext, cluster: Cluster,
                                                              node: Node) -> None:
    page = context.new_page()
    sign_in(page, cluster.hub.url, cluster.supervisor, "/console/review")
    expect(page.get_by_role("link", name="Nodes")).to_have_count(0)
    page.goto(f"{cluster.hub.url}/console/nodes")  # an admin's page, as GET /sync/nodes is
    expect(page.get_by_role("alert")).to_contain_text("Your role may not do this.")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, cluster.hub.url, cluster.hub.token, "/console/nodes")
    row = page.locator("table.nodes tbody tr", has_text="dakar")
    expect(row).to_contain_text("DKR")
    expect(row).to_contain_text("active")
    acked = cluster.hub.sql("SELECT acked_seq FROM sync_node WHERE name = 'dakar'")[0][0]
    assert acked > 0
    expect(row.locator("td").nth(4)).to_have_text(str(acked))
    expect(page.locator("#dedup-pending")).to_have_text(re.compile(r"^\d+$"))
    shot(page, "nodes")


def test_the_page_follows_a_french_browser_and_the_switch(browser: Browser, cluster: Cluster) -> None:
    cluster.pair("Sokhna", "Diouf")  # an item, so that the queue shows a date
    ctx = browser.new_context(locale="fr-FR", viewport={"width": 1366, "height": 768})
    try:
        page = ctx.new_page()
        page.goto(f"{cluster.hub.url}/console/review")
        assert page.locator("html").get_attribute("lang") == "fr"
        page.get_by_label("Jeton").fill(cluster.supervisor)
        page.get_by_role("button", name="Se connecter").click()
        expect(page.get_by_role("heading", name="File de revue")).to_be_visible()
        months = "janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre"
        expect(page.locator("table.list").first).to_contain_text(re.compile(rf"\d+ ({months}) \d{{4}} à"))
        page.get_by_role("button", name="English").click()
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        assert page.locator("html").get_attribute("lang") == "en"
    finally:
        ctx.close()


def test_a_page_weighs_under_150_kb_and_fits_a_phone(browser: Browser, cluster: Cluster) -> None:
    _, _, item = cluster.pair("Penda", "Sall")
    ctx = browser.new_context(viewport={"width": 360, "height": 740}, locale="en-GB")
    try:
        page = ctx.new_page()
        sign_in(page, cluster.hub.url, cluster.supervisor)
        sizes: list[dict[str, Any]] = []
        page.on("requestfinished", lambda request: sizes.append(request.sizes()))
        page.goto(f"{cluster.hub.url}/console/review/{item}", wait_until="networkidle")
        weight = sum(s["responseBodySize"] + s["responseHeadersSize"] for s in sizes)
        assert sizes and weight <= PAGE_BUDGET, weight
        for path in (f"/console/review/{item}", "/console/review", "/console/nodes"):
            page.goto(cluster.hub.url + path)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
    finally:
        ctx.close()


def test_a_node_shows_its_sync_and_its_review_items_read_only(context: BrowserContext, node: Node) -> None:
    page = context.new_page()
    sign_in(page, node.url, node.token, "/console/sync")
    expect(page.get_by_role("heading", name="Sync status")).to_be_visible()
    expect(page.locator("table.fields")).to_contain_text("Pending changes")
    expect(page.locator("table.fields")).to_contain_text("Last success")
    page.get_by_role("link", name=re.compile("Open items")).click()
    page.locator("table.list a").first.click()
    expect(page.locator("table.compare")).to_contain_text("Faye")
    expect(page.get_by_role("button", name="Merge")).to_have_count(0)
    expect(page.get_by_text("the hub decides them once this node has synced").first).to_be_visible()
