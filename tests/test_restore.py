"""A node restored from a copy older than what it pushed catches up from the hub, never forks.

Real processes: a hub on PostgreSQL, a node serving on SQLite, ``mpi-node backup``/``restore``
and ``mpi-node sync`` as commands.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from cluster import Hub, Node, Server, cli, exported_envelopes, free_port, identities, post_raw

from shared.ids import parse


def _person(i: int) -> dict[str, object]:
    return {"first_name": f"Awa{i}", "last_name": f"Ndiaye{i}", "date_of_birth": f"19{50 + i}-01-0{1 + i % 9}",
            "gender": "F", "phone_number": f"+22177000{i:04d}"}


def _restored(data: Path, token: str) -> Node:
    """A node process on a folder ``mpi-node restore`` wrote (no init: it is the copy's node)."""
    node = Node.__new__(Node)
    Server.__init__(node, "node", ["--data-dir", str(data)], free_port(),
                    env={"MPI_SYNC_INTERVAL_SECONDS": "3600"})
    node.data, node.token = data, token
    return node


def test_a_node_restored_from_a_copy_older_than_its_last_sync_catches_up(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    a.start()
    try:
        before = [a.register(**_person(i)) for i in range(2)]
        a.sync()
        made = cli("node", "backup", "--data-dir", str(a.data), str(tmp_path / "a.backup")).stdout
        copy_seq = int(re.search(r"changes up to (\d+)", made).group(1))  # type: ignore[union-attr]
        after = [a.register(**_person(i)) for i in range(2, 5)]
        a.sync()  # these reach the hub: the copy lacks them
        lost = a.register(**_person(9))  # this never does: the laptop is stolen before its next sync
    finally:
        a.stop()
    hub_seq = hub.sql("SELECT acked_seq FROM sync_node WHERE name = 'a'")[0][0]
    assert hub_seq > copy_seq
    # The hub edits one of the identities the copy lacks: the restored node must apply it after the create.
    status, body = hub.call("PATCH", f"/mpi/{after[0]}", {"phone_number": "+221770009999"})
    assert status == 200, body

    said = cli("node", "restore", "--data-dir", str(tmp_path / "a2"), str(tmp_path / "a.backup")).stdout
    assert "ID counter moved on by 100000" in said and "first sync" in said, said
    r = _restored(tmp_path / "a2", a.token)
    r.start()
    try:
        status, state = r.call("GET", "/sync/status")
        assert status == 200 and state["restored"]["acked_seq"] == copy_seq, state
        fresh = r.register(**_person(20))  # written after the restore, before its first sync
        # The margin: no ID the lost node minted (synced or not) comes again.
        assert fresh not in {*before, *after, lost}
        assert parse(fresh).origin()[1] >= 100_000

        out = r.sync().stdout  # a command beside the serving process, as an operator would
        behind = hub_seq - copy_seq
        assert f"the copy was {behind} change(s) behind the hub" in out, out
        assert "1 change(s) written since the restore renumbered" in out, out

        # No fork: the hub took the renumbered change after what it held and keeps the node active.
        assert hub.sql("SELECT status FROM sync_node WHERE name = 'a'") == [("active",)]
        assert hub.sql("SELECT count(*) FROM sync_fork") == [(0,)]
        assert hub.sql("SELECT acked_seq FROM sync_node WHERE name = 'a'")[0][0] == hub_seq + 1

        # Nothing that reached the hub is lost; what never did is; the post-restore write reached it.
        held = identities(r)
        assert {*before, *after, fresh} <= set(held) and lost not in held
        assert held[after[0]][7] == "+221770009999"  # the hub's edit, applied after the create it follows
        at_hub = identities(hub)
        assert {*before, *after, fresh} <= set(at_hub) and lost not in at_hub
        # They came back as this node's own changes, in its chain, acknowledged.
        mine = r.sql("SELECT seq, prev_hash, hash FROM change_log WHERE node_id = "
                     "(SELECT value FROM node_meta WHERE key = 'node_id') ORDER BY seq")
        assert [s for s, _, _ in mine] == list(range(1, hub_seq + 2))
        assert all(mine[i][1] == mine[i - 1][2] for i in range(1, len(mine)))
        assert mine[-1][2] == hub.sql("SELECT acked_hash FROM sync_node WHERE name = 'a'")[0][0]

        status, state = r.call("GET", "/sync/status")
        assert state["restored"] is None and state["caught_up"]["behind"] == behind, state
        assert state["cursors"]["acked_seq"] == state["cursors"]["last_seq"] == hub_seq + 1

        # It goes on: a new registration mints past everything and syncs as usual.
        newer = r.register(**_person(21))
        assert parse(newer).origin()[1] == parse(fresh).origin()[1] + 1
        again = r.sync().stdout
        assert "behind" not in again and "pushed" in again
        assert newer in identities(hub)
    finally:
        r.stop()

    # A copy put back by hand (no restore marker) that wrote nothing since catches up the same way,
    # when the hub's acknowledgement shows it is behind.
    cli("node", "restore", "--data-dir", str(tmp_path / "a3"), str(tmp_path / "a.backup"))
    by_hand = _restored(tmp_path / "a3", a.token)
    with sqlite3.connect(tmp_path / "a3" / "mpi.sqlite3") as db:
        db.execute("DELETE FROM node_meta WHERE key = 'sync_restored'")
    head = hub.sql("SELECT acked_seq FROM sync_node WHERE name = 'a'")[0][0]
    out = by_hand.sync().stdout
    assert f"the copy was {head - copy_seq} change(s) behind the hub" in out, out
    assert {*before, *after, fresh, newer} <= set(identities(by_hand))
    assert hub.sql("SELECT status FROM sync_node WHERE name = 'a'") == [("active",)]


def test_a_lost_node_is_replaced_with_what_the_hub_holds_for_it_under_a_new_number(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    a.start()
    try:
        own = [a.register(**_person(i)) for i in range(3)]
        visitor = a.register(**_person(5), region_code="THI")  # outside its region: a holding of a
        a.sync()
        offline = a.register(**_person(9))  # never synced: the laptop is stolen
    finally:
        a.stop()
    old_id = a.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
    old_number = int(a.sql("SELECT value FROM node_meta WHERE key = 'node_number'")[0][0])
    assert hub.sql("SELECT mpi_id FROM sync_holding WHERE node_name = 'a'") == [(visitor,)]

    said = cli("hub", "node", "replace", "--database-url", hub.database_url, "a", "--hub-url", hub.url,
               "--out", str(tmp_path / "a2.json")).stdout
    assert "revoked node a" in said and "a-2" in said, said
    again = cli("hub", "node", "replace", "--database-url", hub.database_url, "a", "--hub-url", hub.url,
                "--out", str(tmp_path / "a3.json"), check=False)
    assert again.returncode != 0 and "replaced already, by a-2" in again.stderr and not (tmp_path / "a3.json").exists()

    r = Node(tmp_path / "r", tmp_path / "a2.json")
    r.sync()
    held = identities(r)
    # Everything of its region and holdings that reached the hub; what never did is lost.
    assert {*own, visitor} <= set(held) and offline not in held
    # The lost node's changes keep their author, here and at the hub.
    creates = {m: n for m, n in r.sql("SELECT mpi_id, node_id FROM change_log WHERE kind = 'identity.create'")}
    assert all(creates[m] == old_id for m in [*own, visitor])
    assert {n for (n,) in hub.sql("SELECT node_id FROM change_log WHERE kind = 'identity.create' AND mpi_id = ANY(%s)",
                                    [*own, visitor])} == {old_id}
    # A number never used: no ID it mints can be one the lost node minted, even offline.
    new_number = int(r.sql("SELECT value FROM node_meta WHERE key = 'node_number'")[0][0])
    assert new_number != old_number and new_number not in {n for (n,) in hub.sql(
        "SELECT node_number FROM sync_node WHERE name <> 'a-2'")}
    r.start()
    try:
        mine = r.register(**_person(9))
        assert mine != offline and parse(mine).origin()[0] == new_number
        r.sync()
        assert mine in identities(hub)
    finally:
        r.stop()

    # The lost node's key is refused (403): what it still holds cannot reach the hub.
    for envelope in exported_envelopes(a, tmp_path):
        status, body = post_raw(hub.url, "/sync/push", envelope)
        assert status == 403 and json.loads(body)["status"] == "revoked_key", body
    listed = {n["name"]: n for n in map(json.loads, cli(
        "hub", "node", "list", "--database-url", hub.database_url).stdout.splitlines())}
    assert listed["a"]["status"] == "revoked" and listed["a"]["replaced_by"] == "a-2"
    assert listed["a-2"]["replaces"] == "a" and listed["a-2"]["status"] == "active"
    assert listed["a-2"]["regions"] == listed["a"]["regions"]
    assert [visitor] == [m for (m,) in hub.sql("SELECT mpi_id FROM sync_holding WHERE node_name = 'a-2'")]


def test_the_hub_restored_from_a_dump_serves_and_enrolled_nodes_sync_on(hub: Hub, pg_server: str,
                                                                        tmp_path: Path) -> None:
    """README, Operations: pg_dump -Fc while it serves; pg_restore into a new database; serve it
    with the same sealing key file (kept apart from the dump); nodes go on without re-enrolment."""
    import subprocess
    import uuid

    import psycopg
    from conftest import pg_url

    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    b = Node(tmp_path / "b", hub.enroll("b", "DKR", tmp_path / "b.json", hub.url))
    a.start()
    try:
        first = [a.register(**_person(i)) for i in range(2)]
        a.sync()
        b.sync()
        dump = tmp_path / "hub.dump"
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), hub.database_url], check=True, capture_output=True)
        later = [a.register(**_person(i)) for i in range(2, 4)]  # reach the hub after the dump
        a.sync()
        b.sync()
    finally:
        a.stop()
    port = hub.port
    hub.stop()  # the hub's machine is lost; its dump and its sealing key file are not
    name = f"mpi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    restored = Server("hub", ["--database-url", pg_url(name)], port, token=hub.token,
                      env={"MPI_DEDUP_INTERVAL_SECONDS": "0"})
    try:
        subprocess.run(["pg_restore", "--no-owner", "-d", pg_url(name), str(dump)], check=True, capture_output=True)
        restored.start()  # the same URL: the nodes' enrolment names it
        a.start()
        try:
            # The restored hub lacks what a pushed after the dump: a's next round pushes it again (the hub
            # acknowledges less than a holds), with a new registration, under a's same key.
            newest = a.register(**_person(7))
            a.sync()
        finally:
            a.stop()
        b.sync()
        held = identities(b)
        assert {*first, *later, newest} <= set(held)
        status, body = restored.call("GET", f"/mpi/{later[0]}")
        assert status == 200, body
        with psycopg.connect(pg_url(name)) as conn:
            states = dict(conn.execute("SELECT name, status FROM sync_node").fetchall())
            forks = conn.execute("SELECT count(*) FROM sync_fork").fetchone()
        assert states == {"a": "active", "b": "active"} and forks == (0,)
    finally:
        restored.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
