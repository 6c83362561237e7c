"""A revoked node gets nothing more from the hub, push or pull, and shows why."""

from __future__ import annotations

from pathlib import Path

from cluster import Hub, Node, cli, identities


def test_a_revoked_node_pulls_nothing_and_says_why(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    assert "pulled 0" in a.sync().stdout
    cli("hub", "node", "revoke", "--database-url", hub.database_url, "a")
    status, body = hub.call("POST", "/mpi/register", {
        "first_name": "Khady", "last_name": "Sarr", "date_of_birth": "1980-04-05", "gender": "F",
        "region_code": "DKR", "country_code": "SN"})
    assert status == 201, body
    done = a.sync(check=False)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "revoked_key" in lines[0] and "revoked at the hub" in lines[0], done.stderr
    assert body["mpi_id"] not in identities(a)  # nothing of the hub's data reached it
    # The file way is closed too.
    refused = cli("hub", "sync", "export", "--database-url", hub.database_url, "--node", "a",
                  str(tmp_path / "to-a.mpib"), check=False)
    assert refused.returncode != 0 and "revoked" in refused.stderr and not (tmp_path / "to-a.mpib").exists()
    a.start()
    try:
        status, state = a.call("GET", "/sync/status")
        assert status == 200 and state["blocked"]["code"] == "revoked_key", state
        assert "revoked" in state["last_error"]
    finally:
        a.stop()
