"""Every replica of an identity stays current, also at a node of another region that holds it."""

from __future__ import annotations

from pathlib import Path

from cluster import Hub, Node, identities, sync_now

KHADY = {"first_name": "Khady", "last_name": "Faye", "date_of_birth": "1988-11-12", "gender": "F",
         "region_code": "THI", "phone_number": "+221770000001"}


def test_an_identity_registered_at_another_regions_node_stays_current_there(hub: Hub, tmp_path: Path) -> None:
    d = Node(tmp_path / "d", hub.enroll("dkr", "DKR", tmp_path / "d.json", hub.url))
    t = Node(tmp_path / "t", hub.enroll("thi", "THI", tmp_path / "t.json", hub.url))
    for n in (d, t):
        n.start()
    try:
        khady = d.register(**KHADY)  # a Thies resident, registered at a Dakar post
        sync_now(d)
        sync_now(t)
        assert identities(t)[khady] == identities(hub)[khady]
        # Edited at her own region's post: one round of each and the Dakar post serves the new phone.
        assert t.call("PATCH", f"/mpi/{khady}", {"phone_number": "+221770000002"})[0] == 200
        sync_now(t)
        sync_now(d)
        status, body = d.call("GET", f"/mpi/{khady}")
        assert status == 200 and body["phone_number"] == "+221770000002", body
        assert identities(d)[khady] == identities(hub)[khady] == identities(t)[khady]
        assert hub.sql("SELECT node_name, mpi_id FROM sync_holding") == [("dkr", khady)]
        # Concurrent edits at both posts converge at both posts and at the hub.
        assert d.call("PATCH", f"/mpi/{khady}", {"phone_number": "+221770000011"})[0] == 200
        assert t.call("PATCH", f"/mpi/{khady}", {"phone_number": "+221770000022", "last_name": "Fay"})[0] == 200
        for node in (d, t, d):
            sync_now(node)
        final = identities(hub)[khady]
        assert identities(d)[khady] == final == identities(t)[khady]
        assert final[7] == "+221770000022" and final[2] == "Fay"  # the later write wins everywhere
        # An edit at the hub reaches the holder too.
        status, _ = hub.call("PATCH", f"/mpi/{khady}", {"phone_number": "+221770000033"}, token=hub.token)
        assert status == 200
        sync_now(d)
        assert identities(d)[khady][7] == "+221770000033"
    finally:
        d.stop()
        t.stop()


def test_a_merge_of_a_held_identity_brings_its_canonical_identity_to_the_holder(hub: Hub, tmp_path: Path) -> None:
    d = Node(tmp_path / "d", hub.enroll("dkr", "DKR", tmp_path / "d.json", hub.url))
    d.start()
    try:
        khady = d.register(**KHADY)
        sync_now(d)
        status, body = hub.call("POST", "/mpi/register", {
            "first_name": "Mariama", "last_name": "Sarr", "date_of_birth": "1975-02-03", "gender": "F",
            "region_code": "THI", "country_code": "SN"}, token=hub.token)
        assert status == 201, body
        other = body["mpi_id"]
        status, body = hub.call("POST", "/mpi/merge", {"source_mpi_id": khady, "target_mpi_id": other,
                                                        "reason": "same person"}, token=hub.token)
        assert status == 200, body
        sync_now(d)
        status, body = d.call("GET", f"/mpi/{khady}")
        assert status == 200 and body["mpi_id"] == other and body["merged_from"] == khady, body
        assert identities(d)[other] == identities(hub)[other]
        status, _ = hub.call("PATCH", f"/mpi/{other}", {"phone_number": "+221770000044"}, token=hub.token)
        assert status == 200
        sync_now(d)
        assert identities(d)[other][7] == "+221770000044"
    finally:
        d.stop()
