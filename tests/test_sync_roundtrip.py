"""Push and pull between a hub on PostgreSQL and two nodes on SQLite, as real processes."""

from __future__ import annotations

from pathlib import Path

from cluster import Hub, Node, identities, programmes


def test_two_nodes_converge_and_verify_each_others_cards(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("dakar-1", "DKR", tmp_path / "a.json", hub.url))
    b = Node(tmp_path / "b", hub.enroll("dakar-2", "DKR", tmp_path / "b.json", hub.url))
    a.start()
    b.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        moussa = b.register(first_name="Moussa", last_name="Sow", date_of_birth="1985-05-06", gender="M")
        status, card_a = a.call("POST", f"/mpi/{awa}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
        assert status == 201
        status, card_b = b.call("POST", f"/mpi/{moussa}/card", {"campaign_id": "c1", "programme_type": "nutrition"})
        assert status == 201
        for node in (a, b, a):
            done = node.sync()
            assert "pushed" in done.stdout, done.stdout
        assert identities(a) == identities(b) == identities(hub)
        assert len(identities(hub)) == 2
        assert programmes(a) == programmes(b) == programmes(hub)
        for node in (a, b):
            for card in (card_a, card_b):
                status, answer = node.call("GET", f"/mpi/verify/{card['qr_token']}")
                assert status == 200 and answer["status"] == "valid", answer
        # A revocation at one post reaches the other.
        status, _ = b.call("POST", f"/mpi/{awa}/card/revoke", {"reason": "lost"})
        assert status == 200
        b.sync()
        a.sync()
        status, answer = a.call("GET", f"/mpi/verify/{card_a['qr_token']}")
        assert answer["status"] == "revoked"
        # Nothing to do: one round trip.
        idle = a.sync()
        assert "1 request(s)" in idle.stdout, idle.stdout
        status, state = a.call("GET", "/sync/status")
        assert status == 200 and state["pending_changes"] == 0 and state["last_error"] is None
    finally:
        a.stop()
        b.stop()


def test_pull_answers_a_signed_request_with_what_the_node_lacks(hub: Hub, tmp_path: Path) -> None:
    import asyncio

    from cluster import post_raw

    from node.storage import load_keys
    from shared.cli import registry_for
    from shared.settings import Settings
    from shared.storage.dialects import SqliteDialect
    from shared.storage.store import Store
    from shared.sync.changeset import decode_feed, open_envelope, split_parts
    from shared.sync.node import NodeSync

    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    b = Node(tmp_path / "b", hub.enroll("b", "DKR", tmp_path / "b.json", hub.url))
    a.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        a.sync()
    finally:
        a.stop()

    async def request(pull: bool) -> bytes:
        store = Store(SqliteDialect(str(b.data / "mpi.sqlite3")))
        await store.open()
        try:
            sync = NodeSync(store, registry_for(store, Settings()), load_keys(str(b.data)))
            return (await sync.outgoing(0, pull=pull))[0]
        finally:
            await store.close()

    status, body = post_raw(hub.url, "/sync/pull", asyncio.run(request(True)))
    assert status == 200
    parts = split_parts(body)
    assert [kind for kind, _ in parts] == ["E"]
    items = decode_feed(open_envelope(parts[0][1]))
    assert [(i.kind, i.mpi_id) for i in items] == [("identity.create", awa)]
    status, body = post_raw(hub.url, "/sync/pull", asyncio.run(request(False)))
    assert status == 400 and b"pull.after" in body


def test_a_person_synced_to_the_hub_is_found_by_two_words_like_a_local_one(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("dakar-1", "DKR", tmp_path / "a.json", hub.url))
    a.start()
    try:
        synced = a.register(first_name="Fatou", last_name="Ndiaye", date_of_birth="1991-04-05", gender="F")
        a.sync()
        status, local = hub.call("POST", "/mpi/register", {
            "first_name": "Fatou", "last_name": "Ndiaye", "date_of_birth": "1962-11-20", "gender": "F",
            "region_code": "THS", "country_code": "SN", "force_create": True,
        })
        assert status == 201, local
        for q in ("fatou", "fatou ndiaye", "ndiaye fatou", "fatou ndi"):
            status, found = hub.call("GET", f"/mpi/search?q={q.replace(' ', '+')}")
            assert status == 200, found
            assert {item["mpi_id"] for item in found["items"]} == {synced, local["mpi_id"]}, (q, found)
    finally:
        a.stop()
