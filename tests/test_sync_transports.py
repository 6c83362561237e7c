"""One sync suite over both transports: HTTP and bundle files run the same round and the same checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Hub, Node, cli, free_port, identities, programmes


def _over_http(hub: Hub, tmp_path: Path) -> Callable[[Node, str], None]:
    def sync(node: Node, name: str) -> None:
        node.sync()

    return sync


def _over_files(hub: Hub, tmp_path: Path) -> Callable[[Node, str], None]:
    def sync(node: Node, name: str) -> None:
        up, down = tmp_path / f"{name}-up.mpib", tmp_path / f"{name}-down.mpib"
        cli("node", "sync", "export", "--data-dir", str(node.data), str(up), env=node.env)
        cli("hub", "sync", "import", "--database-url", hub.database_url, str(up))
        cli("hub", "sync", "export", "--database-url", hub.database_url, "--node", name, str(down))
        cli("node", "sync", "import", "--data-dir", str(node.data), str(down), env=node.env)

    return sync


@pytest.mark.parametrize("transport", [_over_http, _over_files], ids=["http", "file"])
def test_edits_at_two_posts_reach_each_other(hub: Hub, tmp_path: Path,
                                             transport: Callable[[Hub, Path], Callable[[Node, str], None]]) -> None:
    sync = transport(hub, tmp_path)
    url = hub.url if transport is _over_http else f"http://127.0.0.1:{free_port()}"
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", url))
    b = Node(tmp_path / "b", hub.enroll("b", "DKR", tmp_path / "b.json", url))
    a.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        assert a.call("POST", f"/mpi/{awa}/programmes", {"programme_type": "nutrition"})[0] == 201
    finally:
        a.stop()
    for node, name in ((a, "a"), (b, "b")):
        sync(node, name)
    b.start()
    try:
        assert b.call("PATCH", f"/mpi/{awa}", {"phone_number": "+221770000009"})[0] == 200
    finally:
        b.stop()
    for node, name in ((b, "b"), (a, "a")):
        sync(node, name)
    assert identities(a) == identities(b) == identities(hub)
    assert identities(a)[awa][7] == "+221770000009"
    assert programmes(a) == programmes(b) == programmes(hub) == {(awa, "nutrition")}
    for node in (a, b):
        node_id = node.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
        assert node.sql("SELECT value FROM node_meta WHERE key = 'sync_acked_seq'")[0][0] == str(
            hub.sql("SELECT max(seq) FROM change_log WHERE node_id = %s", node_id)[0][0])
