"""POST /sync/enroll against a real hub process: rate-limited, one answer for every refusal, and
nothing in a database (the hub's or a node's) completes an enrolment without the secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from cluster import Hub, cli, free_port, post_raw
from nacl.signing import SigningKey

from shared.sync.enrolment import enrolment_key, enrolment_proof, registration_request


def _post(hub: Hub, body: dict[str, Any]) -> tuple[int, bytes]:
    return post_raw(hub.url, "/sync/enroll", json.dumps(body).encode())


def _request(name: str, secret: str, key: SigningKey | None = None, node_id: str = "node-thief") -> dict[str, Any]:
    """A registration as a node holding ``secret`` would make it (for its own key)."""
    key = key or SigningKey.generate()
    proof = enrolment_proof(name, node_id, bytes(key.verify_key).hex())
    return registration_request(name, node_id, key, enrolment_key(secret).sign(proof).signature.hex())


def _forgeries(name: str, values: list[str]) -> list[dict[str, Any]]:
    """What a thief can build from 64-hex values found in a database: each used as a MAC key (the
    scheme before enrolment keys), as an Ed25519 seed, and as a secret."""
    out = []
    for value in values:
        key = SigningKey.generate()
        public = bytes(key.verify_key).hex()
        proof = enrolment_proof(name, "node-thief", public)
        signature = key.sign(proof).signature.hex()
        out.append({"name": name, "node_id": "node-thief", "public_key": public, "signature": signature,
                    "mac": hmac.new(bytes.fromhex(value), proof, hashlib.sha256).hexdigest()})
        seed = bytes.fromhex(value)[:32]
        out.append({**out[-1], "enrol_signature": SigningKey(seed).sign(proof).signature.hex()})
        out.append({**out[-1], "enrol_signature": enrolment_key(value).sign(proof).signature.hex()})
        out.append({**out[-1], "enrol_signature": value})  # the stored value itself, as it is
    return out


def _hex_values(rows: list[tuple[Any, ...]]) -> list[str]:
    return sorted({v for row in rows for v in row if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64,128}", v)})


def test_enrol_answers_one_body_for_every_refusal_and_429_under_a_flood(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)
    hub.env["MPI_ENROLL_RATE_PER_MINUTE"] = "8"
    hub.start()
    try:
        secret = json.loads(hub.enroll("n", "DKR", tmp_path / "n.json", hub.url).read_text())["secret"]
        unknown = _post(hub, _request("ghost", secret))
        wrong = _post(hub, _request("n", "not the secret"))
        assert unknown[0] == 403 and json.loads(unknown[1])["status"] == "enrolment_refused"
        assert wrong == unknown  # the same status and the very same body: no name is told apart
        key = SigningKey.generate()
        status, body = _post(hub, _request("n", secret, key, "node-real"))
        assert status == 200 and json.loads(body)["status"] == "active"
        assert _post(hub, _request("n", secret, key, "node-real"))[0] == 200  # a lost answer, asked again
        assert _post(hub, _request("n", secret)) == unknown  # used already: the same answer again
        other = json.loads(hub.enroll("m", "DKR", tmp_path / "m.json", hub.url).read_text())["secret"]
        assert _post(hub, _request("m", other, key, "node-real")) == unknown  # another node's id and key: no 500
        statuses = [_post(hub, _request("n", "guess")) for _ in range(12)]
        refused = [s for s, _ in statuses if s == 429]
        assert len(refused) >= 8 and all(s in (403, 429) for s, _ in statuses), [s for s, _ in statuses]
        flooded = json.loads(statuses[-1][1])
        assert flooded["status"] == "rate_limited" and flooded["retry_after"] >= 1
        # Honest sync is not the enrolment route: the hub still answers it.
        assert hub.call("GET", "/sync/nodes")[0] == 200
    finally:
        hub.stop()


def test_a_copy_of_the_hub_database_completes_no_enrolment(pg_database: str, tmp_path: Path) -> None:
    """A thief with the hub's PostgreSQL database (no enrolment file) tries every value of the row."""
    hub = Hub(pg_database)
    hub.env["MPI_ENROLL_RATE_PER_MINUTE"] = "0"
    hub.start()
    try:
        enrolment = hub.enroll("victim", "DKR", tmp_path / "victim.json", hub.url)
        stolen = _hex_values(hub.sql("SELECT * FROM sync_node WHERE name = 'victim'"))
        assert stolen  # the row holds what the hub checks an enrolment with
        answers = {_post(hub, body) for body in _forgeries("victim", stolen)}
        assert {status for status, _ in answers} == {403}, answers
        assert hub.sql("SELECT status, node_id FROM sync_node WHERE name = 'victim'") == [("pending", None)]
        # A new file for the pending node (a file feared lost): the old one stops working.
        renewed = tmp_path / "victim-again.json"
        cli("hub", "node", "enroll", "--database-url", pg_database, "--name", "victim", "--region", "DKR",
            "--hub-url", hub.url, "--out", str(renewed), "--again")
        assert json.loads(renewed.read_text())["node_number"] == json.loads(enrolment.read_text())["node_number"]
        old = cli("node", "init", "--data-dir", str(tmp_path / "old"), "--enroll", str(enrolment), check=False)
        assert old.returncode != 0 and "enrolment was refused" in old.stderr
        done = cli("node", "init", "--data-dir", str(tmp_path / "v"), "--enroll", str(renewed))
        assert "key registered" in done.stdout
        assert hub.sql("SELECT status FROM sync_node WHERE name = 'victim'") == [("active",)]
    finally:
        hub.stop()


def test_a_copy_of_an_unregistered_node_s_database_registers_no_other_key(pg_database: str, tmp_path: Path) -> None:
    """A node enrolled while the hub was out of reach keeps a proof until it registers: it names
    the node's own key, so a copy of its database (without the key file) registers no other."""
    hub = Hub(pg_database)
    hub.env["MPI_ENROLL_RATE_PER_MINUTE"] = "0"
    hub.start()
    try:
        late = hub.enroll("late", "DKR", tmp_path / "late.json", f"http://127.0.0.1:{free_port()}")
        assert "first sync" in cli("node", "init", "--data-dir", str(tmp_path / "l"), "--enroll", str(late)).stdout
        db = tmp_path / "l" / "mpi.sqlite3"
        con = sqlite3.connect(db)
        rows = con.execute("SELECT key, value FROM node_meta").fetchall()
        con.execute("UPDATE node_meta SET value = ? WHERE key = 'hub_url'", (hub.url,))
        con.commit()
        con.close()
        meta = dict(rows)
        assert json.loads(late.read_text())["secret"] not in set(meta.values())
        stolen = _hex_values(rows)
        forged = _forgeries("late", stolen)
        # The kept proof on the node's own key and id: the thief cannot sign for that key.
        proofs = [v for v in stolen if len(v) == 128]
        assert proofs
        for value in proofs:
            forged.append({"name": "late", "node_id": meta["node_id"], "public_key": meta["public_key"],
                           "enrol_signature": value, "signature": SigningKey.generate().sign(b"x").signature.hex()})
        answers = {_post(hub, body) for body in forged}
        assert {status for status, _ in answers} == {403}, answers
        cli("node", "sync", "--data-dir", str(tmp_path / "l"))
        assert hub.sql("SELECT status FROM sync_node WHERE name = 'late'") == [("active",)]
    finally:
        hub.stop()
