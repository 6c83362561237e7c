"""Faults on real processes: cut links, lost answers, replays, tampering, foreign and revoked keys.

A hub on a fresh PostgreSQL database, nodes on SQLite, and a TCP proxy of our own between
them; what is checked is what the hub and the nodes hold afterwards.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Hub, Node, cli, exported_envelopes, identities, people, post_raw, sync_now
from proxy import Proxy

from shared.sync.changeset import split_parts


@pytest.fixture
def proxy(hub: Hub) -> Iterator[Proxy]:
    p = Proxy(hub.port)
    yield p
    p.close()


def _node(hub: Hub, tmp_path: Path, name: str, url: str, region: str = "DKR", **env: str) -> Node:
    node = Node(tmp_path / name, hub.enroll(name, region, tmp_path / f"{name}.json", url), env=env)
    node.start()
    return node


def _hub_changes(hub: Hub, node: Node) -> list[int]:
    node_id = node.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
    return [r[0] for r in hub.sql("SELECT seq FROM change_log WHERE node_id = %s ORDER BY seq", node_id)]


def _assert_all_once(hub: Hub, node: Node) -> None:
    """Every change of the node is at the hub exactly once, with the node's own hash."""
    node_id = node.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
    mine = node.sql("SELECT seq, hash FROM change_log WHERE node_id = ? ORDER BY seq", node_id)
    held = hub.sql("SELECT seq, hash FROM change_log WHERE node_id = %s ORDER BY seq", node_id)
    assert [tuple(r) for r in held] == [tuple(r) for r in mine]


def test_cuts_at_many_points_of_a_push_lose_nothing(hub: Hub, proxy: Proxy, tmp_path: Path) -> None:
    a = _node(hub, tmp_path, "a", proxy.url, MPI_SYNC_BATCH_MAX="40")
    try:
        people(a, 120, "c")
        size = len(exported_envelopes(a, tmp_path)[0])
        failures = 0
        for cut in (10, 200, size // 3, size // 2, size - 5, size + 150):
            proxy.faults.cut_up_after = cut
            status, _ = a.call("POST", "/sync/now")
            failures += status != 200
            proxy.faults.cut_up_after = 0
            status, state = a.call("GET", "/sync/status")
            assert state["cursors"]["acked_seq"] <= state["cursors"]["last_seq"]
        assert failures >= 4  # the cuts really cut
        sync_now(a)
        _assert_all_once(hub, a)
        assert identities(hub) == identities(a)
    finally:
        a.stop()


def test_lost_answer_after_the_hub_committed_is_rescued_by_overlap(hub: Hub, proxy: Proxy, tmp_path: Path) -> None:
    a = _node(hub, tmp_path, "a", proxy.url)
    try:
        people(a, 30, "l")
        proxy.faults.swallow_replies = True
        status, answer = a.call("POST", "/sync/now")
        assert status == 503, answer
        proxy.faults.swallow_replies = False
        assert len(_hub_changes(hub, a)) == 30  # committed, though the node never heard
        _, state = a.call("GET", "/sync/status")
        assert state["cursors"]["acked_seq"] == 0 and state["last_error"]
        people(a, 5, "m")  # the next set overlaps what the hub holds
        sync_now(a)
        _assert_all_once(hub, a)
        _, state = a.call("GET", "/sync/status")
        assert state["pending_changes"] == 0 and state["cursors"]["acked_seq"] == state["cursors"]["last_seq"] >= 35
    finally:
        a.stop()


def test_replays_duplicates_and_reordering_are_safe_even_concurrently(hub: Hub, tmp_path: Path) -> None:
    a = _node(hub, tmp_path, "a", hub.url)
    try:
        people(a, 25, "r")
        sets = exported_envelopes(a, tmp_path)  # 3 sets of up to 10 changes
        assert len(sets) == 3
        status, body = post_raw(hub.url, "/sync/push", sets[1])
        assert status == 409 and json.loads(body) == {
            "status": "chain_gap", "error": "the chain continues at sequence 1", "expected_seq": 1}
        answers: list[tuple[int, bytes]] = []
        threads = [threading.Thread(target=lambda: answers.append(post_raw(hub.url, "/sync/push", sets[0])))
                   for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert {s for s, _ in answers} == {200}
        acks = {dict(split_parts(b))["A"] for _, b in answers}
        assert len(acks) == 1  # every replay got the same acknowledgement
        for raw in (sets[1], sets[1], sets[0], sets[2], sets[2]):
            status, _ = post_raw(hub.url, "/sync/push", raw)
            assert status == 200
        assert _hub_changes(hub, a) == list(range(1, 26))
        # An overlapping set (8..25 after 1..25) is a replay too: nothing applied twice.
        sync_now(a)
        _assert_all_once(hub, a)
        assert identities(hub) == identities(a)
    finally:
        a.stop()


def _flip(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]


def test_tampered_envelopes_and_foreign_keys_are_refused(hub: Hub, tmp_path: Path) -> None:
    from nacl.signing import SigningKey

    from shared.crypto import load_key_file
    from shared.sync.changeset import open_envelope

    a = _node(hub, tmp_path, "a", hub.url)
    b = _node(hub, tmp_path, "b", hub.url)
    try:
        people(a, 5, "t")
        people(b, 1, "u")
        sync_now(b)  # b's key is registered
        sync_now(a)
        people(a, 5, "v")
        raw = exported_envelopes(a, tmp_path)[0]
        env = open_envelope(raw)
        header_end = 6 + int.from_bytes(raw[4:6], "big")
        cases = {
            "header": _flip(raw, 20),
            "body": _flip(raw, header_end + 5),
            "signature": _flip(raw, len(raw) - 3),
        }
        for where, tampered in cases.items():
            status, body = post_raw(hub.url, "/sync/push", tampered)
            answer = json.loads(body)
            assert status in (400, 401), (where, answer)
            assert answer["status"] in ("bad_signature", "bad_envelope", "unknown_key"), (where, answer)
        # A truncated compressed stream, signed properly: refused as a bad envelope, not a 500.
        key_a = load_key_file(a.data / "node.key")
        unsigned = raw[:header_end] + env.body[: len(env.body) // 2]
        status, body = post_raw(hub.url, "/sync/push", unsigned + key_a.sign(unsigned).signature)
        assert status == 400 and json.loads(body)["status"] == "bad_envelope"
        # Signed by b's key but claiming to be a.
        key_b = load_key_file(b.data / "node.key")
        forged = raw[:-64]
        status, body = post_raw(hub.url, "/sync/push", forged + key_b.sign(forged).signature)
        assert status == 401 and json.loads(body)["status"] == "bad_signature"
        # A key nobody enrolled.
        status, body = post_raw(hub.url, "/sync/push", forged + SigningKey.generate().sign(forged).signature)
        assert status == 401
        status, body = post_raw(hub.url, "/sync/push", b"garbage")
        assert status == 400 and json.loads(body)["status"] == "bad_envelope"
        assert len(_hub_changes(hub, a)) == 5  # none of it was applied
        sync_now(a)
        _assert_all_once(hub, a)
    finally:
        a.stop()
        b.stop()


def test_revoked_node_is_refused_and_the_refusal_is_shown(hub: Hub, tmp_path: Path) -> None:
    a = _node(hub, tmp_path, "a", hub.url)
    try:
        people(a, 3, "k")
        sync_now(a)
        cli("hub", "node", "revoke", "--database-url", hub.database_url, "a")
        people(a, 2, "x")
        status, answer = a.call("POST", "/sync/now")
        assert status == 502 and answer["reason"] == "revoked_key", answer
        _, state = a.call("GET", "/sync/status")
        refusal = state["refused"][0]
        assert refusal["code"] == "revoked_key" and refusal["first_seq"] == 4 and refusal["pending"]
        assert len(_hub_changes(hub, a)) == 3  # what came before the revocation stays
        done = a.sync(check=False)
        assert done.returncode != 0 and "revoked_key" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    finally:
        a.stop()


def test_a_fork_quarantines_the_node_and_keeps_the_proof(hub: Hub, tmp_path: Path) -> None:
    from shared.crypto import load_key_file
    from shared.sync.changelog import Change, change_hash
    from shared.sync.changeset import open_envelope, seal_changes

    a = _node(hub, tmp_path, "a", hub.url)
    try:
        people(a, 3, "f")
        sync_now(a)
        env = open_envelope(exported_envelopes(a, tmp_path)[0]) if False else None
        del env
        node_id, key_id = a.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0], \
            a.sql("SELECT value FROM node_meta WHERE key = 'key_id'")[0][0]
        prev = a.sql("SELECT hash, hlc FROM change_log WHERE seq = 2 AND node_id = ?", node_id)[0]
        payload = '{"first_name":"Forged"}'
        digest = change_hash(prev[0], node_id, 3, prev[1] + 1, "identity.set", None, payload)
        forged = Change(node_id, 3, prev[1] + 1, key_id, "identity.set", None, payload, prev[0], digest)
        raw = seal_changes([forged], load_key_file(a.data / "node.key"), node_id=node_id, key_id=key_id,
                           next_seq=3, prev_hash=prev[0])
        status, body = post_raw(hub.url, "/sync/push", raw)
        assert status == 409 and json.loads(body)["status"] == "chain_fork"
        assert hub.sql("SELECT status FROM sync_node WHERE name = 'a'")[0][0] == "quarantined"
        proof = hub.sql("SELECT seq, held_hash, envelope FROM sync_fork")
        assert proof[0][0] == 3 and bytes(proof[0][2]) == raw
        people(a, 1, "g")
        status, answer = a.call("POST", "/sync/now")
        assert status == 502 and answer["reason"] == "quarantined"
    finally:
        a.stop()


def test_key_rotation_signed_by_the_old_key_and_the_old_key_stops_there(hub: Hub, tmp_path: Path) -> None:
    from shared.crypto import load_key_file
    from shared.sync.changeset import open_envelope

    a = _node(hub, tmp_path, "a", hub.url)
    try:
        people(a, 2, "o")
        sync_now(a)
        old_key = load_key_file(a.data / "node.key")
        people(a, 2, "p")  # written under the old key, pushed after the rotation
        a.stop()
        done = cli("node", "key", "rotate", "--data-dir", str(a.data))
        assert "rotated the node key" in done.stdout
        assert len(list(a.data.glob("node.key*"))) == 2 and (a.data / "node.key").stat().st_mode & 0o077 == 0
        a.start()
        people(a, 2, "q")
        sync_now(a)
        _assert_all_once(hub, a)
        keys = hub.sql("SELECT status, first_seq, last_seq FROM sync_key ORDER BY first_seq")
        rotation = a.sql("SELECT seq FROM change_log WHERE kind = 'key.rotate'")[0][0]
        assert keys == [("rotated", 1, rotation), ("active", rotation + 1, None)]
        # The old key signs nothing after the rotation point.
        people(a, 1, "r")
        raw = exported_envelopes(a, tmp_path)[0]
        env = open_envelope(raw)
        forged = raw[:-64]
        forged_env = forged.replace(env.key_id.encode(), hub.sql(
            "SELECT key_id FROM sync_key WHERE status = 'rotated'")[0][0].encode())
        status, body = post_raw(hub.url, "/sync/push", forged_env + old_key.sign(forged_env).signature)
        assert status == 403 and json.loads(body)["status"] == "revoked_key"
        sync_now(a)
        _assert_all_once(hub, a)
    finally:
        a.stop()
