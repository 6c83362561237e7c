"""Dedup split through PostgreSQL, with real processes: workers claiming sweep slices, two hubs on one database.

- Two ``mpi-hub dedup worker`` processes sweep a few hundred synthetic identities with known
  duplicates and end with the same identities merged together as one worker; a worker
  killed (SIGKILL) while it holds a slice has that slice taken by the other once its lease
  lapses, and the result is again the same.
- Two ``mpi-hub serve`` processes on one database, node A syncing through the first and
  node B through the second, converge; their periodic dedup job runs in one process at a
  time (``job_run`` intervals never overlap) and in none while its advisory lock is held.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster import ENV, ROOT, Hub, Node, cli, free_port, identities, people, sync_now
from conftest import pg_url

sys.path.insert(0, str(ROOT / "scripts"))
from synth import generate, to_person  # noqa: E402

from hub.storage import hub_store  # noqa: E402
from hub.workers import lock_key  # noqa: E402
from shared.cli import registry_for  # noqa: E402
from shared.schemas import RegisterIn  # noqa: E402
from shared.settings import Settings  # noqa: E402

SLICE = "40"  # identities per slice: a few hundred identities make about ten slices


async def _load(url: str, n: int) -> int:
    """Write ``n`` synthetic records (duplicates included) as synced registrations: no matching on the way in."""
    settings = Settings(database_url=url)
    store = hub_store(settings)
    await store.connect()
    try:
        await store.load_state()
        registry = registry_for(store, settings)
        items, seen = [], set()
        for rec in generate(n, seed=19, dup_rate=0.25, lookalike_rate=0.05):
            body = {k: rec[k] for k in ("first_name", "last_name", "date_of_birth", "gender", "region_code",
                                        "phone_number") if rec.get(k) is not None}
            if rec.get("dhis2_uid") and rec["dhis2_uid"] not in seen:
                seen.add(rec["dhis2_uid"])
                body["external_ids"] = {"dhis2_uid": rec["dhis2_uid"]}
            items.append((RegisterIn.model_validate({**body, "country_code": "SN"}), to_person(rec)))
        async with store.write("test") as tx:
            await registry.insert_new(tx, items)
    finally:
        await store.close()
    return len(items)


def _copy(src: str) -> str:
    name = src.rsplit("/", 1)[1] + "_copy" + str(time.monotonic_ns() % 100000)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{src.rsplit("/", 1)[1]}"')
    return pg_url(name)


def _drop(url: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _worker(url: str, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "dedup", "worker", "--database-url", url, "--name", name, "--batch", SLICE,
         "--poll", "0.2", "--until-idle", *extra],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return out


def _sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query).fetchall())


def _groups(url: str) -> set[frozenset[str]]:
    """Identities that ended as one person: each survivor with everything merged into it, transitively."""
    into = dict(_sql(url, "SELECT mpi_id, merged_into FROM identity"))

    def root(x: str) -> str:
        while into.get(x):
            x = into[x]
        return x

    groups: dict[str, set[str]] = {}
    for mpi_id in into:
        groups.setdefault(root(mpi_id), set()).add(mpi_id)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@pytest.fixture
def swept_hubs(pg_database: str) -> Iterator[list[str]]:
    """Three copies of one hub holding the same synthetic identities, each with a sweep cut into slices."""
    Hub(pg_database)  # init (schema, key) and a token
    loaded = asyncio.run(_load(pg_database, 300))
    assert loaded == 300
    copies = [_copy(pg_database), _copy(pg_database)]
    urls = [pg_database, *copies]
    for url in urls:
        planned = cli("hub", "dedup", "plan", "--database-url", url, "--batch", SLICE).stdout
        assert "slices" in planned, planned
    try:
        yield urls
    finally:
        for url in copies:
            _drop(url)


def test_two_workers_and_a_killed_one_merge_as_one_worker(swept_hubs: list[str]) -> None:
    one, two, killed = swept_hubs
    slices = _sql(one, "SELECT count(*) FROM dedup_slice")[0][0]
    assert slices >= 7

    # One worker alone.
    _finish(_worker(one, "solo"))
    alone = _groups(one)
    assert len(alone) >= 20, "the known duplicates are merged"
    assert _sql(one, "SELECT count(*) FROM dedup_slice WHERE status <> 'done'")[0][0] == 0

    # Two at once: the slices are shared between them, the result is the same. The slices
    # stay locked until both workers are connected and polling (a slice locked by another
    # transaction is skipped, and still counts as work left), so neither starts alone and
    # takes them all while the other process is still starting.
    with psycopg.connect(two) as gate:
        gate.execute("SELECT lo_pk FROM dedup_slice FOR UPDATE").fetchall()
        a, b = _worker(two, "a"), _worker(two, "b")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            connected = gate.execute(
                "SELECT count(DISTINCT application_name || client_port::text) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
            if connected and connected[0] >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # both past their first look
        gate.commit()
    _finish(a), _finish(b)
    assert _groups(two) == alone
    by_worker = dict(_sql(two, "SELECT worker, count(*) FROM dedup_slice GROUP BY worker"))
    assert set(by_worker) == {"a", "b"} and sum(by_worker.values()) == slices
    assert _sql(two, "SELECT max(attempts) FROM dedup_slice")[0][0] == 1  # no slice claimed twice

    # A worker killed while it holds a slice: the other takes it once the lease lapses.
    victim = _worker(killed, "victim", "--lease", "3")
    deadline = time.monotonic() + 60
    held: list[tuple[Any, ...]] = []
    while not held and time.monotonic() < deadline:
        held = _sql(killed, "SELECT lo_pk FROM dedup_slice WHERE status = 'claimed' AND worker = 'victim'")
        if not held:
            time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert held, "the victim claimed a slice"
    lo = held[0][0]
    status = _sql(killed, f"SELECT status, worker FROM dedup_slice WHERE lo_pk = {lo}")[0]
    if status == ("claimed", "victim"):  # killed holding it (not in the instant between done and the next claim)
        # The rescuer starts once the lease has lapsed, so it takes the victim's slice first and
        # the rest after it, in pk order as one worker does: the sweep's decisions depend on the
        # order of the slices (README, "Known limit"), and this part tests the redo of a slice.
        time.sleep(3.5)
        _finish(_worker(killed, "rescuer", "--lease", "3"))
        assert _sql(killed, f"SELECT status, worker, attempts FROM dedup_slice WHERE lo_pk = {lo}")[0] == (
            "done", "rescuer", 2)
    else:
        pytest.fail(f"the victim finished its slice before the kill: {status}")
    assert _sql(killed, "SELECT count(*) FROM dedup_slice WHERE status <> 'done'")[0][0] == 0
    assert _groups(killed) == alone
    # No identity merged twice: each merged identity points at one survivor, and the counts agree.
    assert _sql(killed, "SELECT count(*) FROM identity WHERE status = 'merged'") == _sql(
        one, "SELECT count(*) FROM identity WHERE status = 'merged'")


def test_two_hub_processes_on_one_database_serve_two_nodes(pg_database: str, tmp_path: Path) -> None:
    first = Hub(pg_database)
    second = Hub.__new__(Hub)
    second.__dict__.update(first.__dict__)
    second.port, second.proc = free_port(), None
    for hub in (first, second):
        # The drain job every 0.2 s in both processes: without the lock their runs would overlap.
        hub.env = {**hub.env, "MPI_DEDUP_INTERVAL_SECONDS": "0.2"}
    nodes: list[Node] = []
    try:
        first.start()
        second.start()
        a = Node(tmp_path / "a", first.enroll("a", "DKR", tmp_path / "a.json", first.url, subscribe="THI"))
        b = Node(tmp_path / "b", second.enroll("b", "THI", tmp_path / "b.json", second.url, subscribe="DKR"))
        nodes = [a, b]
        for node in nodes:
            node.start()
        people(a, 15, "A", "DKR")
        people(b, 15, "B", "THI")
        for _ in range(2):
            for node in nodes:
                sync_now(node)
        # The hubs' dedup may merge look-alikes of people() between two syncs: rounds until
        # nothing is pending at the hub and a round brings nothing new.
        for _ in range(5):
            assert second.call("POST", "/dedup/run")[0] == 200
            for node in nodes:
                sync_now(node)
            if not first.sql("SELECT 1 FROM dedup_pending") and identities(a) == identities(b) == identities(first):
                break
        assert identities(a) == identities(b) == identities(first)
        assert len(identities(first)) == 30

        # While this test holds the drain job's advisory lock, neither process runs the job.
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key("drain"),))
            time.sleep(0.5)  # a run already going when the lock was asked for has ended by now
            before = _sql(pg_database, "SELECT count(*) FROM job_run WHERE job = 'drain'")[0][0]
            time.sleep(1.5)
            during = _sql(pg_database, "SELECT count(*) FROM job_run WHERE job = 'drain'")[0][0]
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key("drain"),))
        assert during == before
        time.sleep(1.0)
        runs = _sql(pg_database, "SELECT process, started_at, finished_at FROM job_run WHERE job = 'drain' "
                                 "AND finished_at IS NOT NULL ORDER BY started_at")
        assert len(runs) > during
        assert len({process for process, _, _ in runs}) == 2, "both processes ran the job, in turn"
        for (_, _, end), (_, start, _) in zip(runs, runs[1:], strict=False):
            assert end <= start, "two runs of the drain job overlapped"
    finally:
        for server in [*nodes, second, first]:
            server.stop()
