"""Property: the hub and the nodes answer alike for every identity both hold, whatever path it took.

Random writes go down random paths (a local write at a post, a write at the hub, a bulk
import, HTTP sync, a USB bundle both ways, a merge and an unmerge, a move to the other
post's region and back), between a hub process on PostgreSQL and two node processes on
SQLite. At quiescence, for every identity a node holds, the node and the hub hold the same
search tokens and blocking keys, GET answers the same body, a two-word search finds it at
both, and a node holds every identity of its region that the hub holds.
"""

from __future__ import annotations

import csv
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from cluster import Hub, Node, cli
from conftest import pg_url
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FIRST = ["Awa", "Fatou", "Mame Diarra", "Néné", "Moussa", "Ibrahima"]
LAST = ["Ndiaye", "N'Diaye", "Diop", "Fall", "Sow"]
_regions = (f"S{a}{b}" for a, b in itertools.product("ABCDEFGHJKLMNPQRTUVWXYZ", repeat=2))

post = st.integers(0, 1)
pick = st.integers(0, 30)
operation = st.one_of(
    st.tuples(st.just("register"), post, st.sampled_from(FIRST), st.sampled_from(LAST), st.booleans()),
    st.tuples(st.just("hub_register"), post, st.sampled_from(FIRST), st.sampled_from(LAST)),
    st.tuples(st.just("import"), post, st.integers(1, 3)),
    st.tuples(st.just("patch"), post, pick, st.sampled_from(["first_name", "last_name", "phone_number"]), st.integers(0, 9)),
    st.tuples(st.just("hub_patch"), pick, st.sampled_from(["first_name", "phone_number"]), st.integers(0, 9)),
    st.tuples(st.just("move"), post, pick),
    st.tuples(st.just("programme"), post, pick, st.sampled_from(["vaccination", "nutrition"])),
    st.tuples(st.just("merge"), post, pick, pick),
    st.tuples(st.just("unmerge"), post, pick),
    st.tuples(st.just("sync"), post),
    st.tuples(st.just("bundle"), post),
)

# Writes the API may refuse in a random sequence, by their code: anything else fails the test.
EXPECTED_REFUSALS = {"same_identity", "conflicting_external_ids", "not_merged", "not_directly_merged", "not_found"}


@pytest.fixture(scope="module")
def hub(pg_server: str) -> Iterator[Hub]:
    name = f"mpi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server = Hub(pg_url(name))
    server.start()
    yield server
    server.stop()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sql(server: Hub | Node, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """``query`` written with ``?``: both replicas are asked the same question."""
    return server.sql(query.replace("?", "%s") if isinstance(server, Hub) else query, *params)


def _index_of(server: Hub | Node, mpi_id: str) -> dict[str, list[Any]]:
    pk = _sql(server, "SELECT pk FROM identity WHERE mpi_id = ?", mpi_id)[0][0]
    return {
        "tokens": sorted(r[0] for r in _sql(server, "SELECT token FROM name_token WHERE identity_pk = ?", pk)),
        "keys": sorted(r[0] for r in _sql(server, "SELECT key FROM blocking_key WHERE identity_pk = ?", pk)),
    }


def _found_by_two_words(server: Hub | Node, body: dict[str, Any]) -> bool:
    q = f"{body['first_name']} {body['last_name']}"
    status, page = server.call("GET", f"/mpi/search?q={quote(q)}&limit=100")
    assert status == 200, page
    return body["mpi_id"] in {item["mpi_id"] for item in page["items"]}


def _but_updated_at(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "updated_at"}


class _Scenario:
    def __init__(self, hub: Hub, folder: Path) -> None:
        self.hub, self.folder = hub, folder
        self.regions = [next(_regions), next(_regions)]
        self.names = [f"same-{r}" for r in self.regions]
        self.nodes = [
            Node(folder / r, hub.enroll(name, r, folder / f"{r}.json", hub.url))
            for name, r in zip(self.names, self.regions, strict=True)
        ]
        self.ids: list[str] = []
        self.refused: list[str] = []
        self.serial = itertools.count()

    def __enter__(self) -> _Scenario:
        for node in self.nodes:
            node.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.stop()

    def _write(self, server: Hub | Node, method: str, path: str, body: Any, ok: tuple[int, ...]) -> Any:
        status, answer = server.call(method, path, body)
        if status in ok:
            return answer
        assert 400 <= status < 500 and answer["status"] in EXPECTED_REFUSALS, (method, path, body, status, answer)
        self.refused.append(answer["status"])
        return None

    def _pick(self, n: int) -> str | None:
        return self.ids[n % len(self.ids)] if self.ids else None

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        n = next(self.serial)
        if kind in ("register", "hub_register"):
            first, last = op[2], op[3]
            region = self.regions[op[1]] if kind == "hub_register" or not op[4] else self.regions[1 - op[1]]
            server = self.hub if kind == "hub_register" else self.nodes[op[1]]
            body = {"first_name": first, "last_name": last, "date_of_birth": f"19{60 + n % 40}-0{1 + n % 9}-1{n % 10}",
                    "gender": "F", "region_code": region, "country_code": "SN", "force_create": True}
            answer = self._write(server, "POST", "/mpi/register", body, (201,))
            if answer:
                self.ids.append(answer["mpi_id"])
        elif kind == "import":
            node = self.nodes[op[1]]
            path = self.folder / f"import-{n}.csv"
            with path.open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code"])
                for i in range(op[2]):
                    out.writerow([FIRST[(n + i) % len(FIRST)], f"Imp{chr(65 + n % 26)}{chr(65 + i)}",
                                  f"19{50 + i}-02-0{1 + i}", "M", self.regions[op[1]], "SN"])
            cli("node", "import", "--data-dir", str(node.data), str(path), env=node.env)
            for (mpi_id,) in node.sql("SELECT mpi_id FROM identity WHERE last_name LIKE ?", f"Imp{chr(65 + n % 26)}%"):
                if mpi_id not in self.ids:
                    self.ids.append(mpi_id)
        elif kind == "patch" and (target := self._pick(op[2])):
            value = f"+22177123450{op[4]}" if op[3] == "phone_number" else f"{op[3][:1].upper()}ana{op[4]}"
            self._write(self.nodes[op[1]], "PATCH", f"/mpi/{target}", {op[3]: value}, (200,))
        elif kind == "hub_patch" and (target := self._pick(op[1])):
            value = f"+22177123460{op[3]}" if op[2] == "phone_number" else f"Hub{chr(65 + op[3])}"
            self._write(self.hub, "PATCH", f"/mpi/{target}", {op[2]: value}, (200,))
        elif kind == "move" and (target := self._pick(op[2])):
            status, body = self.hub.call("GET", f"/mpi/{target}")
            if status == 200:  # to the other post's region, or back ("eviction and return")
                other = self.regions[1] if body["region_code"] == self.regions[0] else self.regions[0]
                self._write(self.hub, "PATCH", f"/mpi/{target}", {"region_code": other}, (200,))
        elif kind == "programme" and (target := self._pick(op[2])):
            self._write(self.nodes[op[1]], "POST", f"/mpi/{target}/programmes", {"programme_type": op[3]}, (200, 201))
        elif kind == "merge" and (source := self._pick(op[2])) and (target := self._pick(op[3])):
            self._write(self.nodes[op[1]], "POST", "/mpi/merge",
                        {"source_mpi_id": source, "target_mpi_id": target, "reason": "same"}, (200,))
        elif kind == "unmerge" and (target := self._pick(op[2])):
            self._write(self.nodes[op[1]], "POST", "/mpi/unmerge", {"mpi_id": target, "reason": "not the same"}, (200,))
        elif kind == "sync":
            status, answer = self.nodes[op[1]].call("POST", "/sync/now")
            assert status == 200, answer
        elif kind == "bundle":
            node, name = self.nodes[op[1]], self.names[op[1]]
            up, down = self.folder / f"up-{n}.mpib", self.folder / f"down-{n}.mpib"
            cli("node", "sync", "export", "--data-dir", str(node.data), str(up), env=node.env)
            cli("hub", "sync", "import", "--database-url", self.hub.database_url, str(up))
            cli("hub", "sync", "export", "--database-url", self.hub.database_url, "--node", name, str(down))
            cli("node", "sync", "import", "--data-dir", str(node.data), str(down), env=node.env)

    def settle(self) -> None:
        """Quiescence: every post syncs until a whole round moves nothing."""
        for _ in range(6):
            moved = 0
            for node in self.nodes:
                status, answer = node.call("POST", "/sync/now")
                assert status == 200, answer
                moved += int(answer.get("pushed", 0)) + int(answer.get("pulled", 0))
            if not moved:
                return
        raise AssertionError("the replicas did not settle in six rounds")

    def check(self) -> None:
        for node, region in zip(self.nodes, self.regions, strict=True):
            held = {r[0] for r in node.sql("SELECT mpi_id FROM identity")}
            at_hub = {r[0] for r in self.hub.sql("SELECT mpi_id FROM identity WHERE region_code = %s", region)}
            assert at_hub <= held, f"{region}: the node lacks {sorted(at_hub - held)}"
            for mpi_id in sorted(held):
                s_node, b_node = node.call("GET", f"/mpi/{mpi_id}")
                s_hub, b_hub = self.hub.call("GET", f"/mpi/{mpi_id}")
                # updated_at is when this replica last changed the identity (a known limit: README, Syncing).
                assert (s_node, _but_updated_at(b_node)) == (s_hub, _but_updated_at(b_hub)), (region, mpi_id)
                assert _index_of(node, mpi_id) == _index_of(self.hub, mpi_id), (region, mpi_id)
                if b_hub.get("status") == "active" and "merged_from" not in b_hub:
                    assert _found_by_two_words(node, b_hub) and _found_by_two_words(self.hub, b_hub), (region, mpi_id)


@settings(max_examples=int(__import__("os").environ.get("MPI_PROPERTY_EXAMPLES", "2")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=6, max_size=16))
@example(ops=[
    ("register", 0, "Mame Diarra", "Ndiaye", False), ("register", 0, "Fatou", "N'Diaye", True),
    ("hub_register", 1, "Néné", "Fall"), ("import", 1, 2), ("sync", 0), ("bundle", 1), ("sync", 0),
    ("patch", 1, 1, "phone_number", 3), ("sync", 1), ("sync", 0), ("hub_patch", 0, "first_name", 2),
    ("move", 0, 2), ("programme", 0, 0, "vaccination"), ("merge", 0, 0, 1), ("sync", 0), ("unmerge", 0, 0),
    ("move", 0, 2),
])
def test_every_replica_answers_alike_whatever_path_a_record_took(hub: Hub, tmp_path_factory: pytest.TempPathFactory,
                                                                  ops: list[tuple[Any, ...]]) -> None:
    with _Scenario(hub, tmp_path_factory.mktemp("same")) as scenario:
        for op in ops:
            scenario.run(op)
        scenario.settle()
        scenario.check()
