"""Cross-region dedup end to end: a hub and two nodes as real processes, PostgreSQL and SQLite.

The same mother is registered offline at two posts of two regions; after a sync the hub
merges her and both nodes redirect the merged ID. A second pair (two DHIS2 UIDs: a hard
conflict) lands in the review queue, is decided "not the same", and never comes back,
not even after a full sweep. An unmerge at the hub restores the first pair everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Hub, Node, cli, sync_now

MOTHER = {"first_name": "Aminata", "last_name": "Diallo", "date_of_birth": "1995-03-15", "gender": "F",
          "phone_number": "+221771234567"}
MOUSSA = {"first_name": "Moussa", "last_name": "Traore", "date_of_birth": "1980-01-02", "gender": "M"}


@pytest.fixture
def cluster(pg_database: str, tmp_path: Path) -> Iterator[tuple[Hub, Node, Node]]:
    hub = Hub(pg_database)
    hub.env = {**hub.env, "MPI_AUTO_MERGE_THRESHOLD": "0.99"}
    hub.start()
    dakar = Node(tmp_path / "dakar", hub.enroll("dakar", "DKR", tmp_path / "dakar.json", hub.url))
    thies = Node(tmp_path / "thies", hub.enroll("thies", "THI", tmp_path / "thies.json", hub.url))
    for node in (dakar, thies):
        node.start()
    yield hub, dakar, thies
    for server in (dakar, thies, hub):
        server.stop()


def test_hub_merges_across_regions_reviews_and_unmerges(cluster: tuple[Hub, Node, Node]) -> None:
    hub, dakar, thies = cluster
    # Offline: neither post can see the other.
    first = dakar.register(**MOTHER, region_code="DKR")
    second = thies.register(**MOTHER, region_code="THI")
    moussa_dkr = dakar.register(**MOUSSA, region_code="DKR", external_ids={"dhis2_uid": "aaaDEF123gh"})
    moussa_thi = thies.register(**MOUSSA, region_code="THI", external_ids={"dhis2_uid": "bbbDEF123gh"})
    sync_now(dakar)
    sync_now(thies)

    # One dedup pass, now: the hub finds her twice and merges the newer registration into the older.
    status, ran = hub.call("POST", "/dedup/run")
    assert status == 200 and ran["merged"] == 1 and ran["queued"] == 1, ran
    assert hub.sql("SELECT merged_into FROM identity WHERE mpi_id = %s", second) == [(first,)]
    audit = hub.sql("SELECT actor, detail FROM audit_log WHERE action = 'merge' AND mpi_id = %s", second)
    assert audit and "automatic merge" in audit[0][1] and "score" in audit[0][1]
    # The two Moussas have two DHIS2 UIDs: a person must decide.
    assert len(hub.sql("SELECT pk FROM review_item WHERE status = 'open' AND reason = 'hard_conflict'")) == 1
    # Nothing is left queued: a pass from the command line finds nothing more to do.
    again = cli("hub", "dedup", "run", "--database-url", hub.database_url)
    assert again.stdout.startswith("checked 0 queued identities: 0 merged, 0 queued"), again.stdout
    status, queue = hub.call("GET", "/review", None)
    assert status == 200
    item = next(i for i in queue["items"] if i["reason"] == "hard_conflict")
    assert set(item["mpi_ids"]) == {moussa_dkr, moussa_thi}

    for node in (dakar, thies, dakar, thies):
        sync_now(node)
    for node in (dakar, thies):
        status, body = node.call("GET", f"/mpi/{second}")
        assert status == 200 and body["mpi_id"] == first and body["merged_from"] == second, (node.data.name, body)

    # "Not the same person": remembered, replicated, never raised again.
    status, decided = hub.call("POST", f"/review/{item['id']}/decision", {"decision": "not_same", "reason": "two people"})
    assert status == 200 and decided["status"] == "decided"
    window = cli("hub", "dedup", "sweep", "--database-url", hub.database_url, "--restart", "--batch", "1", "--stop-after", "1")
    assert window.stdout.startswith("swept 1 identities so far (stopped by --stop-after"), window.stdout
    swept = cli("hub", "dedup", "sweep", "--database-url", hub.database_url, "--restart")
    assert "swept" in swept.stdout and "so far" not in swept.stdout
    assert hub.sql("SELECT count(*) FROM review_item WHERE status = 'open' AND reason = 'hard_conflict'") == [(0,)]
    for node in (dakar, thies, dakar, thies):
        sync_now(node)
    pair = tuple(sorted((moussa_dkr, moussa_thi)))
    for node in (dakar, thies):
        assert node.sql("SELECT mpi_a, mpi_b FROM not_same") == [pair], node.data.name

    # The unmerge at the hub flows down: both identities again, everywhere.
    status, undone = hub.call("POST", "/mpi/unmerge", {"mpi_id": second, "reason": "not the same mother"})
    assert status == 200, undone
    for node in (dakar, thies, dakar, thies):
        sync_now(node)
    for server in (hub, thies):
        status, body = server.call("GET", f"/mpi/{second}")
        assert status == 200 and body["mpi_id"] == second and "merged_from" not in body, body
    status, body = dakar.call("GET", f"/mpi/{first}")
    assert body["mpi_id"] == first and "merged_from" not in body
