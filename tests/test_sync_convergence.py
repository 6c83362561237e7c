"""Concurrent edits, merges, moves between regions and cards: every replica ends the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Hub, Node, identities, programmes, sync_now

AWA = {"first_name": "Awa", "last_name": "Ndiaye", "date_of_birth": "1990-01-02", "gender": "F"}
OUMOU = {"first_name": "Oumou", "last_name": "Kane", "date_of_birth": "1972-08-30", "gender": "F"}


@pytest.fixture
def pair(hub: Hub, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    nodes = [Node(tmp_path / n, hub.enroll(n, "DKR", tmp_path / f"{n}.json", hub.url)) for n in ("a", "b")]
    for n in nodes:
        n.start()
    yield nodes[0], nodes[1]
    for n in nodes:
        n.stop()


def _everyone(*nodes: Node) -> None:
    for node in (*nodes, *nodes):
        sync_now(node)


def _same(hub: Hub, *nodes: Node, regions: tuple[str, ...] = ("DKR",)) -> None:
    expected = identities(hub, regions)
    for node in nodes:
        held = identities(node, regions)
        assert held.keys() == expected.keys()
        for key, row in expected.items():
            assert held[key] == row, (node.data.name, key)


def test_two_nodes_editing_the_same_field_offline_converge_and_open_a_review(hub: Hub, pair: tuple[Node, Node]) -> None:
    a, b = pair
    awa = a.register(**AWA)
    _everyone(a, b)
    assert b.call("PATCH", f"/mpi/{awa}", {"last_name": "Ndiaye-Sow"})[0] == 200
    assert a.call("PATCH", f"/mpi/{awa}", {"last_name": "Ndiay"})[0] == 200  # later: wins
    assert a.call("PATCH", f"/mpi/{awa}", {"phone_number": "+221771234567"})[0] == 200
    _everyone(b, a)
    _same(hub, a, b)
    assert identities(hub)[awa][2] == "Ndiay" and identities(hub)[awa][7] == "+221771234567"
    reviews = hub.sql("SELECT reason, mpi_ids, detail FROM review_item WHERE reason = 'concurrent_edit'")
    assert len(reviews) == 1
    detail = json.loads(reviews[0][2])
    assert json.loads(reviews[0][1]) == [awa] and detail["field"] == "last_name"
    assert sorted(detail["values"]) == ["Ndiay", "Ndiaye-Sow"]
    # The name b holds came by sync: b can still edit it (its name counts were kept in step).
    b.stop()
    b.start()
    assert b.call("PATCH", f"/mpi/{awa}", {"first_name": "Awa Marie"})[0] == 200
    assert a.call("PATCH", f"/mpi/{awa}", {"last_name": "Ndiaye"})[0] == 200


def test_a_merge_at_the_hub_and_an_offline_edit_of_the_merged_identity(hub: Hub, pair: tuple[Node, Node]) -> None:
    a, b = pair
    first = a.register(**AWA)
    second = b.register(**{**AWA, "first_name": "Awa Marie"})
    _everyone(a, b)
    # Supervisors at the hub merge the two while node a, offline, edits the one that goes away.
    status, _ = hub.call("POST", "/mpi/merge", {"source_mpi_id": second, "target_mpi_id": first, "reason": "dup"},
                         token=hub.token)
    assert status == 200
    assert a.call("PATCH", f"/mpi/{second}", {"phone_number": "+221770000001"})[0] == 200
    assert a.call("POST", f"/mpi/{second}/programmes", {"programme_type": "nutrition"})[0] == 201
    _everyone(a, b)
    _same(hub, a, b)
    canonical = identities(hub)[first]
    assert canonical[8] == "active" and canonical[7] == "+221770000001"  # the edit landed on the canonical one
    assert identities(hub)[second][8] == "merged" and identities(hub)[second][9] == first
    assert programmes(hub) == programmes(a) == programmes(b) == {(first, "nutrition")}
    for node in (a, b):
        status, body = node.call("GET", f"/mpi/{second}")
        assert status == 200 and body["mpi_id"] == first and body["merged_from"] == second


def test_concurrent_opposite_merges_commute(hub: Hub, pair: tuple[Node, Node]) -> None:
    a, b = pair
    x = a.register(**AWA)
    y = a.register(**{**AWA, "first_name": "Awa Marie"})
    _everyone(a, b)
    assert a.call("POST", "/mpi/merge", {"source_mpi_id": x, "target_mpi_id": y, "reason": "dup"})[0] == 200
    assert b.call("POST", "/mpi/merge", {"source_mpi_id": y, "target_mpi_id": x, "reason": "dup"})[0] == 200
    _everyone(a, b)
    _same(hub, a, b)
    states = identities(hub)
    merged = [k for k, v in states.items() if v[8] == "merged"]
    active = [k for k, v in states.items() if v[8] == "active"]
    assert len(merged) == 1 and len(active) == 1 and states[merged[0]][9] == active[0]  # no cycle


def test_moving_to_another_region_evicts_and_cards_stay_verifiable(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    t = Node(tmp_path / "t", hub.enroll("t", "THI", tmp_path / "t.json", hub.url))
    for n in (a, t):
        n.start()
    try:
        awa = a.register(**AWA)
        status, card = a.call("POST", f"/mpi/{awa}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
        assert status == 201
        oumou = t.register(**OUMOU, region_code="THI")
        status, card_t = t.call("POST", f"/mpi/{oumou}/card", {"campaign_id": "c1", "programme_type": "nutrition"})
        _everyone(a, t)
        assert oumou not in identities(a) and awa not in identities(t)  # each holds its own region
        status, answer = a.call("GET", f"/mpi/verify/{card_t['qr_token']}")  # a card from Thies, at Dakar
        assert status == 200 and answer == {"status": "valid", "programme_count": 1,
                                            "verified_at": answer["verified_at"]}
        assert a.call("PATCH", f"/mpi/{awa}", {"region_code": "THI"})[0] == 200
        _everyone(a, t)
        assert awa not in identities(a)  # left a's scope: evicted, not orphaned
        assert identities(t)[awa] == identities(hub)[awa] and identities(t)[awa][5] == "THI"
        assert (awa, "vaccination") in programmes(t)
        for node in (a, t):
            status, answer = node.call("GET", f"/mpi/verify/{card['qr_token']}")
            assert status == 200 and answer["status"] == "valid", (node.kind, answer)
        # Revoked in Thies: the revocation reaches Dakar, which no longer holds the person.
        assert t.call("POST", f"/mpi/{awa}/card/revoke", {"reason": "lost"})[0] == 200
        _everyone(t, a)
        assert a.call("GET", f"/mpi/verify/{card['qr_token']}")[1]["status"] == "revoked"
        _same(hub, a, regions=("DKR",))
        _same(hub, t, regions=("THI",))
    finally:
        a.stop()
        t.stop()


def test_a_move_made_at_the_hub_evicts_and_snapshots_too(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    t = Node(tmp_path / "t", hub.enroll("t", "THI", tmp_path / "t.json", hub.url))
    for n in (a, t):
        n.start()
    try:
        awa = a.register(**AWA)
        assert a.call("POST", f"/mpi/{awa}/programmes", {"programme_type": "nutrition"})[0] == 201
        _everyone(a, t)
        assert awa in identities(a) and awa not in identities(t)
        status, _ = hub.call("PATCH", f"/mpi/{awa}", {"region_code": "THI"}, token=hub.token)
        assert status == 200
        _everyone(a, t)
        assert awa not in identities(a)
        assert identities(t)[awa] == identities(hub)[awa] and (awa, "nutrition") in programmes(t)
    finally:
        a.stop()
        t.stop()
