"""Learning from reviewers, and the model reaching a node: a hub on PostgreSQL and a node, as processes.

Reviewers decide pairs over the API (merge, not the same); ``mpi-hub model train`` (a process,
retraining for real with scikit-learn on a small generated population) learns from them and
stores the model it accepts; a node's sync brings that model, checked against the hub's
signature and hash: a tampered file is refused and the old model keeps scoring; the good
one is loaded while the node serves, scores its matches, and survives a restart. A model
worse than the current one is refused; ``mpi-hub model use`` rolls back.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from cluster import Hub, Node, cli, sync_now
from nacl.signing import SigningKey

from shared.matching import LearnedMatcher, LearnedModel, NameFrequencies, Person, default_model
from shared.sync.errors import BadSignature
from shared.sync.modelsync import ModelNotice, open_notice, seal_notice

# Small and quick: a population of 2,000 generated people, 60 trees, 3 folds (~15 s on one core).
TRAIN = ("--pairs", "2000", "--iterations", "60", "--folds", "3")
PAIRS = [  # (registered first, registered again over the blocking match, the reviewer's decision)
    ({"first_name": "Aminata", "last_name": "Diallo", "date_of_birth": "1995-03-15", "gender": "F"},
     {"first_name": "Aminata", "last_name": "Diallo", "date_of_birth": "1995-03-15", "gender": "F"}, "merge"),
    ({"first_name": "Moussa", "last_name": "Traore", "date_of_birth": "1980-01-02", "gender": "M"},
     {"first_name": "Moussa", "last_name": "Traore", "date_of_birth": "1980-01-02", "gender": "M"}, "not_same"),
    ({"first_name": "Fatou", "last_name": "Ndiaye", "date_of_birth": "2001-07-09", "gender": "F"},
     {"first_name": "Fatou", "last_name": "Ndiaye", "date_of_birth": "2001-07-09", "gender": "F"}, "merge"),
    ({"first_name": "Ibrahima", "last_name": "Sow", "date_of_birth": "1975-11-30", "gender": "M"},
     {"first_name": "Ibrahima", "last_name": "Sow", "date_of_birth": "1975-11-30", "gender": "M"}, "not_same"),
]
# A pair the models disagree on (a typo in the first name, another birth year): what the node scores.
HELD = {"first_name": "Mariama", "last_name": "Ba", "date_of_birth": "1988-04-21", "gender": "F"}
QUERY = {"first_name": "Mariema", "last_name": "Ba", "date_of_birth": "1987-04-21", "gender": "F"}


@pytest.fixture
def cluster(hub: Hub, tmp_path: Path) -> Iterator[tuple[Hub, Node]]:
    node = Node(tmp_path / "dakar", hub.enroll("dakar", "DKR", tmp_path / "dakar.json", hub.url))
    node.start()
    yield hub, node
    node.stop()


def _health(server: Hub | Node) -> str:
    status, body = server.call("GET", "/health")
    assert status == 200, body
    return str(body["matcher"])


def _node_score(node: Node, held: str) -> float:
    """The node's score of QUERY against HELD (through POST /mpi/match)."""
    status, body = node.call("POST", "/mpi/match", {**QUERY, "region_code": "DKR", "country_code": "SN"})
    assert status == 200, body
    (score,) = [m["similarity_score"] for m in body["matches"] if m["mpi_id"] == held]
    return float(score)


def _expected(model: LearnedModel) -> float:
    """The score ``model`` gives QUERY against HELD on a registry too small for name frequencies (this node's)."""
    def person(v: dict[str, str]) -> Person:
        import datetime as dt
        return Person(v["first_name"], v["last_name"], dt.date.fromisoformat(v["date_of_birth"]), v["gender"], "DKR")

    return LearnedMatcher(frequencies=NameFrequencies(), model=model).compare(person(QUERY), person(HELD)).score


def _set_hub_model_data(hub: Hub, version: str, data: bytes) -> None:
    with psycopg.connect(hub.database_url) as conn:
        conn.execute("UPDATE matcher_model SET data = %s WHERE version = %s", (data, version))


def test_reviewers_retrain_the_model_and_it_reaches_the_node(cluster: tuple[Hub, Node], tmp_path: Path) -> None:
    hub, node = cluster
    shipped = default_model().version
    assert _health(hub) == shipped and _health(node) == shipped
    held = node.register(**HELD)
    sync_now(node)
    before = _node_score(node, held)
    assert before == _expected(default_model())

    # Reviewers decide pairs at the hub, over the API.
    for first, again, decision in PAIRS:
        status, a = hub.call("POST", "/mpi/register", {**first, "region_code": "DKR", "country_code": "SN"})
        assert status == 201, a
        status, b = hub.call("POST", "/mpi/register", {**again, "region_code": "DKR", "country_code": "SN",
                                                        "force_create": True})
        assert status == 201, b
        item = hub.sql("SELECT pk FROM review_item WHERE status = 'open' AND mpi_ids LIKE %s", f"%{b['mpi_id']}%")
        assert len(item) == 1, item
        status, decided = hub.call("POST", f"/review/{item[0][0]}/decision", {"decision": decision})
        assert status == 200 and decided["status"] == "decided", decided
    labels = hub.sql("SELECT decision, person_a, person_b FROM match_label ORDER BY pk")
    assert [d for d, _, _ in labels] == [d for _, _, d in PAIRS]
    # Kept as the reviewer saw them: the merged identity's fields, before the merge.
    assert json.loads(labels[0][2])["first_name"] == "Aminata" and json.loads(labels[0][1])["date_of_birth"] == "1995-03-15"

    # Retraining: a process; it prints before/after on held-out data and stores the model it accepts.
    out = tmp_path / "model.npz"
    trained = cli("hub", "model", "train", "--database-url", hub.database_url, *TRAIN, "--out", str(out), timeout=300)
    assert "4 review decision(s)" in trained.stderr, trained.stderr
    assert "caught" in trained.stdout and "before" in trained.stdout and "after" in trained.stdout, trained.stdout
    good = out.read_bytes()
    new = LearnedModel.load(out)
    version = new.version
    assert version != shipped and version.startswith("learned-") and trained.stdout.rstrip().splitlines()[-1].startswith(
        f"accepted model {version}")
    assert hub.sql("SELECT sha256 FROM matcher_model WHERE version = %s", version) == [(hashlib.sha256(good).hexdigest(),)]
    kept, held_out = map(int, re.search(r"(\d+) to train on, (\d+) held out", trained.stderr).groups())
    assert kept + held_out == 4 and new.meta["trained_on"]["decisions"] == kept
    assert _health(hub) == version  # the serving hub follows what the command made current
    expected = _expected(new)
    assert expected != before, "the test pair must tell the two models apart"

    # Tampered at the hub (same version, other trees): the node refuses it and keeps scoring with its model.
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["value"] = arrays["value"] * 3.0
    forged = io.BytesIO()
    np.savez_compressed(forged, **arrays)
    _set_hub_model_data(hub, version, forged.getvalue())
    sync_now(node)
    status, sync = node.call("GET", "/sync/status")
    assert status == 200 and "SHA-256" in (sync["model"]["error"] or ""), sync["model"]
    assert sync["model"]["hub_names"] == version and sync["model"]["scoring"] == shipped
    assert _health(node) == shipped and _node_score(node, held) == before
    assert node.sql("SELECT count(*) FROM matcher_model") == [(0,)]

    # The file as trained: the node takes it at its next round, while serving, and scores with it.
    _set_hub_model_data(hub, version, good)
    sync_now(node)
    assert _health(node) == version
    assert _node_score(node, held) == expected
    status, sync = node.call("GET", "/sync/status")
    assert sync["model"] == {"scoring": version, "hub_names": version, "error": None}
    assert node.sql("SELECT version, sha256 FROM matcher_model") == [(version, hashlib.sha256(good).hexdigest())]

    # Restarted, with no hub at all: the node keeps the model it received.
    hub.stop()
    node.stop()
    node.start()
    assert _health(node) == version and _node_score(node, held) == expected
    hub.start()

    # A worse model (one tree) is refused: one line, non-zero exit, nothing changes.
    worse = cli("hub", "model", "train", "--database-url", hub.database_url, *TRAIN[:2], "--iterations", "1",
                "--folds", "3", check=False, timeout=300)
    assert worse.returncode == 1, worse
    last = worse.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: model refused, worse than {version} on the held-out set:"), worse.stderr
    assert "Traceback" not in worse.stderr
    assert hub.sql("SELECT count(*) FROM matcher_model") == [(1,)] and _health(hub) == version

    # Roll back to the shipped model: the node follows (it holds that one in its package).
    listed = cli("hub", "model", "list", "--database-url", hub.database_url, "--json").stdout.splitlines()
    assert [(m["version"], m["current"]) for m in map(json.loads, listed)] == [(shipped, False), (version, True)]
    cli("hub", "model", "use", "--database-url", hub.database_url, shipped)
    sync_now(node)
    assert _health(node) == shipped and _node_score(node, held) == before
    unknown = cli("hub", "model", "use", "--database-url", hub.database_url, "learned-none", check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no model learned-none is held here: see mpi-hub model list"


def test_a_model_statement_not_signed_by_the_hub_is_refused() -> None:
    hub, other = SigningKey.generate(), SigningKey.generate()
    notice = ModelNotice("learned-x", "ab" * 32, 10, "node-1", "hub-1")
    assert open_notice(seal_notice(notice, hub), hub.verify_key) == notice
    with pytest.raises(BadSignature):
        open_notice(seal_notice(notice, other), hub.verify_key)
    sealed = bytearray(seal_notice(notice, hub))
    sealed[10] ^= 1  # one byte of the statement changed in transit
    with pytest.raises(BadSignature):
        open_notice(bytes(sealed), hub.verify_key)
