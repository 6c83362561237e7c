"""A node may change only what it holds: the hub authorises every change a node pushes.

The attacker here holds a district's laptop: its database, its node key, this code. It
writes crafted changes into the node's own signed change log (as the node would have made
them) and lets the node push them over HTTP with its real key. The hub must refuse each
one (set aside, ``not_authorised``), change nothing anywhere, and still take the honest
change pushed in the same set.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
from cluster import Hub, Node, cli, identities, sync_now

from shared.ids import mint
from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store

AWA = {"first_name": "Awa", "last_name": "Ndiaye", "date_of_birth": "1990-01-02", "gender": "F"}
MOUSSA = {"first_name": "Moussa", "last_name": "Sow", "date_of_birth": "1985-05-06", "gender": "M"}
FATOU = {"first_name": "Fatou", "last_name": "Diop", "date_of_birth": "1979-07-08", "gender": "F",
         "region_code": "THI"}
CARD = {"campaign_id": "c1", "programme_type": "vaccination"}


async def _console_page(url: str, token: str, path: str) -> tuple[int, str]:
    """Sign in to a real hub's console with ``token`` (as a browser would: CSRF, cookie) and read ``path``."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(url + "/console/sign-in") as r:
            found = re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text())
        assert found
        form = {"token": token, "csrf": found.group(1), "next": path}
        async with session.post(url + "/console/sign-in", data=form, headers={"Origin": url}) as r:
            return r.status, await r.text()


async def _append(data: Path, changes: list[tuple[str, str | None, dict[str, Any]]]) -> None:
    """Write changes straight into a node's change log: the node signs and pushes them as its own."""
    store = Store(SqliteDialect(str(data / "mpi.sqlite3")), audit_flush_seconds=Settings().audit_flush_seconds)
    await store.open()
    try:
        async with store.write("thief") as tx:
            for kind, mpi_id, payload in changes:
                tx.change(kind, mpi_id, payload)
    finally:
        await store.close()


def _hub_state(hub: Hub) -> dict[str, Any]:
    return {
        "identities": identities(hub),
        "cards": sorted(hub.sql("SELECT token_hash, status FROM card")),
        "card_status": sorted(hub.sql("SELECT token_hash, status FROM card_status")),
        "external_ids": sorted(hub.sql("SELECT system, value, identity_pk FROM external_id")),
        "programmes": sorted(hub.sql("SELECT identity_pk, programme_type FROM programme")),
        "merge_links": sorted(hub.sql("SELECT source, target FROM merge_link")),
        "review_items": hub.sql("SELECT count(*) FROM review_item")[0][0],
        "holdings": sorted(hub.sql("SELECT node_name, mpi_id FROM sync_holding")),
    }


def test_a_stolen_node_changes_nothing_it_does_not_hold(hub: Hub, tmp_path: Path) -> None:
    d = Node(tmp_path / "d", hub.enroll("dkr", "DKR", tmp_path / "d.json", hub.url))
    t = Node(tmp_path / "t", hub.enroll("thi", "THI", tmp_path / "t.json", hub.url))
    for n in (d, t):
        n.start()
    try:
        awa, moussa = d.register(**AWA), d.register(**MOUSSA)
        ibrahima = d.register(first_name="Ibrahima", last_name="Fall", date_of_birth="1960-03-04", gender="M",
                              external_ids={"nid": "SN999"})
        status, card = d.call("POST", f"/mpi/{awa}/card", CARD)
        assert status == 201, card
        awa_token = d.sql("SELECT token_hash FROM card")[0][0]
        fatou = t.register(**FATOU)
        sync_now(d)
        sync_now(t)
        # The Thies node knows the Dakar card's token hash (every node verifies every card).
        assert t.sql("SELECT status FROM card_status WHERE token_hash = ?", awa_token) == [("valid",)]
        dkr_id = d.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
        dkr_number = int(d.sql("SELECT value FROM node_meta WHERE key = 'node_number'")[0][0])
        before = _hub_state(hub)
        at_dkr = identities(d)
        t.stop()
        first = t.sql("SELECT max(seq) FROM change_log")[0][0] + 1
        forged = [
            ("identity.set", awa, {"last_name": "Forged"}),  # rename someone THI never held
            ("identity.merge", moussa, {"source": moussa, "target": awa, "reason": "x", "keep_target": True}),
            ("card.revoke", awa, {"token_hash": awa_token, "reason": "stolen"}),
            # The known hash, under an identity THI does hold: still not THI's card.
            ("card.revoke", fatou, {"token_hash": awa_token, "reason": "stolen"}),
            ("card.issue", awa, {"card_code": "X1", "campaign_id": "c1", "programme_type": "vaccination",
                                 "token_hash": "f" * 64, "programme_count": 1, "issued_at": "2026-01-01T00:00:00.000Z"}),
            ("external_id.add", awa, {"system": "nid", "value": "SN999", "instance_url": None}),  # Ibrahima's
            ("programme.add", awa, {"programme_type": "nutrition", "linked_at": "2026-01-01T00:00:00.000Z"}),
            ("review.open", fatou, {"reason": "x", "mpi_ids": [fatou, awa], "similarity_score": 0.9}),
            ("review.not_same", awa, {"mpi_ids": [awa, moussa], "reason": "x"}),
            ("identity.snapshot", awa, {**AWA, "last_name": "Forged", "region_code": "DKR", "country_code": "SN",
                                        "clocks": {"last_name": [2**62, dkr_id]}}),
            ("evict", awa, {"region_code": "THI"}),
            ("review.decision", awa, {"item": 1, "decision": "merge", "mpi_ids": [awa, moussa]}),
            # A clock from the far future naming another node, on THI's own person.
            ("identity.set", fatou, {"last_name": "Forged", "_base": {"last_name": [2**62, dkr_id]}}),
            # An ID squatting on the Dakar node's next registration.
            ("identity.create", mint("SN", "DKR", 26, dkr_number, 500),
             {**MOUSSA, "region_code": "DKR", "country_code": "SN", "created_at": "2026-01-01T00:00:00.000Z"}),
        ]
        asyncio.run(_append(t.data, forged))
        t.start()
        # The honest change pushed in the same set.
        assert t.call("PATCH", f"/mpi/{fatou}", {"phone_number": "+221770000099"})[0] == 200
        sync_now(t)
        status, state = t.call("GET", "/sync/status")
        assert status == 200 and state["pending_changes"] == 0 and state["refused"] == [], state  # sync goes on
        after = _hub_state(hub)
        assert after["identities"][fatou][7] == "+221770000099"  # the honest change arrived
        after["identities"][fatou] = before["identities"][fatou]
        assert after == before
        listing = {n["name"]: n for n in hub.call("GET", "/sync/nodes")[1]["nodes"]}
        aside = {a["seq"]: a for a in listing["thi"]["set_aside"]}
        assert sorted(aside) == list(range(first, first + len(forged))), aside
        for seq, (kind, _, _) in enumerate(forged, first):
            assert aside[seq]["kind"] == kind and aside[seq]["reason"].startswith("not_authorised"), aside[seq]
        assert "ahead" in aside[first + len(forged) - 2]["reason"]
        assert "not_authorised" in cli("hub", "node", "list", "--database-url", hub.database_url).stdout
        status, page = asyncio.run(_console_page(hub.url, hub.token, "/console/nodes"))
        assert status == 200 and page.count("not_authorised") >= len(forged), page  # the console's nodes page
        # Nothing reached the Dakar node either: its people and Awa's card stand.
        sync_now(d)
        assert identities(d) == at_dkr
        status, answer = d.call("GET", f"/mpi/verify/{card['qr_token']}")
        assert status == 200 and answer["status"] == "valid", answer
        # A refused change stays in the hub's log (the chain holds) but counts for nothing: an unmerge at
        # the hub does not take it for one of Awa's own external ids.
        status, body = hub.call("POST", "/mpi/merge", {"source_mpi_id": awa, "target_mpi_id": moussa, "reason": "same"})
        assert status == 200, body
        status, body = hub.call("POST", "/mpi/unmerge", {"mpi_id": awa, "reason": "not the same"})
        assert status == 200, body
        owner = "SELECT i.mpi_id FROM external_id x JOIN identity i ON i.pk = x.identity_pk WHERE x.value = 'SN999'"
        assert hub.sql(owner) == [(ibrahima,)]
        # And the Thies node can still do what it may: its next change arrives.
        assert t.call("PATCH", f"/mpi/{fatou}", {"phone_number": "+221770000098"})[0] == 200
        sync_now(t)
        assert identities(hub)[fatou][7] == "+221770000098"
    finally:
        d.stop()
        t.stop()


def test_what_a_node_holds_it_may_change_across_regions(hub: Hub, tmp_path: Path) -> None:
    """The rule does not get in the way: a visitor registered elsewhere, edited, carded, merged and unmerged there."""
    d = Node(tmp_path / "d", hub.enroll("dkr", "DKR", tmp_path / "d.json", hub.url))
    d.start()
    try:
        khady = d.register(**{**FATOU, "first_name": "Khady"})  # a Thies resident, registered in Dakar
        awa = d.register(**AWA)
        sync_now(d)
        assert d.call("PATCH", f"/mpi/{khady}", {"phone_number": "+221770000011"})[0] == 200
        assert d.call("POST", f"/mpi/{khady}/card", CARD)[0] == 201
        assert d.call("POST", f"/mpi/{khady}/card/revoke", {"reason": "lost"})[0] == 200
        status, body = d.call("POST", "/mpi/merge", {"source_mpi_id": awa, "target_mpi_id": khady, "reason": "same"})
        assert status == 200, body
        status, body = d.call("POST", "/mpi/unmerge", {"mpi_id": awa, "reason": "not the same"})
        assert status == 200, body
        sync_now(d)
        listing = hub.call("GET", "/sync/nodes")[1]["nodes"]
        assert listing[0]["set_aside"] == [], listing
        held = identities(hub)
        assert held[khady][7] == "+221770000011" and held[awa][8] == "active" and held[khady][8] == "active"
        assert hub.sql("SELECT status FROM card") == [("revoked",)]
    finally:
        d.stop()
