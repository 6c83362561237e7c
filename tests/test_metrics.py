"""GET /metrics at a node and at the hub: real processes, scraped over HTTP, parsed by prometheus-client."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cluster import Hub, Node, cli
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(url: str, token: str | None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url + "/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(server: Hub | Node, token: str) -> Samples:
    status, content_type, text = _get(server.url, token)
    assert status == 200, text
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def token(server: Hub | Node, role: str, name: str) -> str:
    where = ["--data-dir", str(server.data)] if isinstance(server, Node) else ["--database-url", server.database_url]
    return cli(server.kind, "token", "create", *where, "--role", role, "--name", name).stdout.strip()


async def _craft(data: Path, mpi_id: str) -> None:
    """A change PostgreSQL refuses (a NUL in text), written straight into the node's change log: set aside."""
    store = Store(SqliteDialect(str(data / "mpi.sqlite3")), audit_flush_seconds=Settings().audit_flush_seconds)
    await store.open()
    try:
        async with store.write("test") as tx:
            tx.change("identity.set", mpi_id, {"phone_number": "+22177\x00123"})
    finally:
        await store.close()


def _refusals(server: Hub | Node, registrar: str) -> None:
    status, content_type, body = _get(server.url, None)
    assert status == 401 and content_type.startswith("application/json") and '"unauthorized"' in body, body
    status, _, body = _get(server.url, registrar)
    assert status == 403 and '"forbidden"' in body, body
    status, _, body = _get(server.url, "mpi_not-a-token")
    assert status == 401, body


def test_node_metrics_requests_by_route_template_and_sync_state(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    watcher, registrar = token(a, "metrics", "prometheus"), token(a, "registrar", "reg")
    admin = token(a, "admin", "root")
    a.start()
    try:
        _refusals(a, registrar)
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        for _ in range(3):
            assert a.call("GET", f"/mpi/{awa}")[0] == 200
        bad = a.call("GET", "/mpi/SN-DKR-26-AAAAAAAA")[0]  # a bad check character (or no such ID): same template
        assert bad in (400, 404)
        assert a.call("GET", "/no/such/route")[0] == 404
        # The metrics role reads no person and does nothing else.
        assert a.call("GET", f"/mpi/{awa}", token=watcher)[0] == 403
        assert a.call("GET", "/sync/status", token=watcher)[0] == 403

        status, _, text = _get(a.url, watcher)
        assert status == 200 and awa not in text and "AAAAAAAA" not in text and "/no/such" not in text
        assert _get(a.url, a.token)[0] == 403  # a supervisor may not; admin and metrics may
        before = scrape(a, admin)
        assert value(before, "mpi_http_requests_total", method="GET", route="/mpi/{mpi_id}", status="200") == 3
        assert value(before, "mpi_http_requests_total", method="GET", route="/mpi/{mpi_id}", status=str(bad)) == 1
        assert value(before, "mpi_http_requests_total", method="GET", route="/mpi/{mpi_id}", status="403") == 1
        assert value(before, "mpi_http_requests_total", method="POST", route="/mpi/register", status="201") == 1
        assert value(before, "mpi_http_requests_total", method="GET", route="(no route)", status="404") == 1
        assert value(before, "mpi_http_requests_total", method="GET", route="/metrics", status="401") == 2
        assert value(before, "mpi_http_requests_total", method="GET", route="/metrics", status="403") == 2
        assert value(before, "mpi_http_request_duration_seconds_count", method="GET", route="/mpi/{mpi_id}") == 5
        assert value(before, "mpi_http_request_duration_seconds_sum", method="GET", route="/mpi/{mpi_id}") > 0
        assert value(before, "mpi_identities", status="active") == 1
        assert value(before, "mpi_sync_enrolled") == 1
        pending = value(before, "mpi_sync_pending_changes")
        assert pending >= 1 and pending == value(before, "mpi_sync_last_seq") - value(before, "mpi_sync_acked_seq")
        assert ("mpi_sync_last_success_timestamp_seconds", ()) not in before
        assert named(before, "mpi_sync_last_error") == {}

        assert a.call("POST", "/sync/now")[0] == 200
        synced = scrape(a, watcher)
        assert value(synced, "mpi_sync_pending_changes") == 0
        assert value(synced, "mpi_sync_acked_seq") == value(synced, "mpi_sync_last_seq") == a.sql(
            "SELECT max(seq) FROM change_log WHERE node_id = (SELECT value FROM node_meta WHERE key = 'node_id')")[0][0]
        assert value(synced, "mpi_sync_last_success_timestamp_seconds") > 1.7e9

        hub.stop()
        try:
            a.register(first_name="Moussa", last_name="Sow", date_of_birth="1985-05-06", gender="M")
            assert a.call("POST", "/sync/now")[0] != 200
            failing = scrape(a, watcher)
        finally:
            hub.start()
        assert value(failing, "mpi_sync_pending_changes") >= 1
        assert value(failing, "mpi_identities", status="active") == 2
        errors = named(failing, "mpi_sync_last_error")
        assert list(errors.values()) == [1.0] and dict(next(iter(errors)))["code"] == "link_down", errors
        assert value(failing, "mpi_sync_last_error_timestamp_seconds") >= value(
            synced, "mpi_sync_last_success_timestamp_seconds")
    finally:
        a.stop()


def test_hub_metrics_nodes_setaside_review_and_dedup(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("post-a", "DKR", tmp_path / "a.json", hub.url))
    watcher, registrar = token(hub, "metrics", "prometheus"), token(hub, "registrar", "reg")
    _refusals(hub, registrar)
    a.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        a.register(first_name="Moussa", last_name="Sow", date_of_birth="1985-05-06", gender="M")
    finally:
        a.stop()
    asyncio.run(_craft(a.data, awa))  # the hub will set this one aside
    a.start()
    try:
        assert a.call("POST", "/sync/now")[0] == 200
    finally:
        a.stop()
    # Two registrations at the hub itself of one person: a review item of the hub's.
    person = {"first_name": "Fatou", "last_name": "Diop", "date_of_birth": "1970-07-07", "gender": "F",
              "region_code": "THI", "country_code": "SN"}
    assert hub.call("POST", "/mpi/register", person)[0] == 201
    assert hub.call("POST", "/mpi/register", {**person, "force_create": True})[0] == 201

    samples = scrape(hub, watcher)
    last_seq = a.sql("SELECT max(seq) FROM change_log")[0][0]
    assert value(samples, "mpi_hub_node_acked_seq", node="post-a") == last_seq
    assert value(samples, "mpi_hub_node_last_seen_timestamp_seconds", node="post-a") > 1.7e9
    assert value(samples, "mpi_hub_node_status", node="post-a", status="active") == 1
    assert value(samples, "mpi_hub_setaside_changes", node="post-a") == 1
    assert value(samples, "mpi_hub_node_pull_position", node="post-a") <= value(samples, "mpi_hub_feed_position")
    backlog = {dict(labels)["reason"]: v for labels, v in named(samples, "mpi_review_backlog").items()}
    open_items = dict(hub.sql("SELECT reason, count(*) FROM review_item WHERE status = 'open' GROUP BY reason"))
    assert backlog == {k: float(v) for k, v in open_items.items()} and sum(backlog.values()) >= 1, backlog
    assert value(samples, "mpi_dedup_queue_length") == hub.sql("SELECT count(*) FROM dedup_pending")[0][0] >= 2
    assert value(samples, "mpi_identities", status="active") == 4
    assert value(samples, "mpi_http_requests_total", method="POST", route="/sync/push", status="200") >= 1

    assert hub.call("POST", "/dedup/run")[0] == 200
    cli("hub", "dedup", "sweep", "--database-url", hub.database_url)
    after = scrape(hub, hub.token)  # admin may too
    assert value(after, "mpi_dedup_queue_length") == 0
    checked = named(after, "mpi_dedup_sweep_checked")
    assert checked and all(v >= 1 for v in checked.values()), checked
    assert set(named(after, "mpi_dedup_sweep_finished").values()) == {1.0}


def test_openapi_describes_metrics_as_text(hub: Hub) -> None:
    status, document = hub.call("GET", "/openapi.json")
    assert status == 200
    operation: dict[str, Any] = document["paths"]["/metrics"]["get"]
    assert operation["x-required-role"] == "metrics"
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert {"401", "403"} <= set(operation["responses"])
