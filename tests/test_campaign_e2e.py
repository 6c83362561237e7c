"""A campaign day against real processes: a node on SQLite registers mothers and children, its hub sees them.

Issue 22's acceptance: a mother and her child with an estimated birth date; the same child
again with another estimate is caught (409); a twin and a namesake of another mother are
let through (201); the mother's children are listed; after a sync the hub answers the link
and the flag, natively and in FHIR, and a change made there comes back to the node.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from cluster import Hub, Node
from fhir.resources.R4B.patient import Patient

from shared.fhir.resources import BIRTH_DATE_ESTIMATED_EXTENSION, RELATED_PERSON_EXTENSION

DKR = {"region_code": "DKR", "country_code": "SN"}


def _register(node: Node, **fields: Any) -> tuple[int, Any]:
    return node.call("POST", "/mpi/register", {**DKR, **fields})


def _fhir_patient(server: Node | Hub, mpi_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/fhir/Patient/{mpi_id}", headers={"Authorization": f"Bearer {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return dict(json.loads(r.read()))


def test_a_campaign_day_at_a_node_reaches_the_hub(hub: Hub, tmp_path: Path) -> None:
    node = Node(tmp_path / "node", hub.enroll("dakar-1", "DKR", tmp_path / "dakar-1.json", hub.url))
    node.start()
    try:
        status, body = _register(node, first_name="Awa", last_name="Diop", date_of_birth="1995-04-02", gender="F")
        assert status == 201, body
        mother = body["mpi_id"]
        status, body = _register(node, first_name="Fatou", last_name="Fall", date_of_birth="1990-01-09", gender="F")
        assert status == 201, body
        other = body["mpi_id"]
        moussa = {"first_name": "Moussa", "last_name": "Diop", "gender": "M"}
        status, body = _register(node, **moussa, age_months=18, related_persons=[{"mpi_id": mother, "relationship": "mother"}])
        assert status == 201, body
        child = body["mpi_id"]

        # The same boy at the next campaign, his age guessed at 22 months: caught.
        status, body = _register(node, **moussa, age_months=22, related_persons=[{"mpi_id": mother, "relationship": "mother"}])
        assert status == 409 and body["existing_mpi_id"] == child, body
        # His twin sister, and a boy of the same name and age whose mother is another woman.
        status, body = _register(
            node, first_name="Awa", last_name="Diop", gender="F", age_months=18,
            related_persons=[{"mpi_id": mother, "relationship": "mother"}],
        )
        assert status == 201, body
        twin = body["mpi_id"]
        status, body = _register(node, **moussa, age_months=18, related_persons=[{"mpi_id": other, "relationship": "mother"}])
        assert status == 201, body
        namesake = body["mpi_id"]

        status, kids = node.call("GET", f"/mpi/search?related_to={mother}")
        assert status == 200 and {i["mpi_id"] for i in kids["items"]} == {child, twin}
        assert all(i["date_of_birth_estimated"] for i in kids["items"])

        node.sync()
        status, at_hub = hub.call("GET", f"/mpi/{child}")
        assert status == 200, at_hub
        assert at_hub["date_of_birth_estimated"] is True
        assert at_hub["related_persons"] == [{"mpi_id": mother, "relationship": "mother"}]
        status, kids = hub.call("GET", f"/mpi/search?related_to={mother}")
        assert {i["mpi_id"] for i in kids["items"]} == {child, twin}
        status, kids = hub.call("GET", f"/mpi/search?related_to={other}")
        assert [i["mpi_id"] for i in kids["items"]] == [namesake]

        resource = _fhir_patient(hub, child)
        Patient.model_validate(resource)
        assert resource["_birthDate"]["extension"] == [{"url": BIRTH_DATE_ESTIMATED_EXTENSION, "valueBoolean": True}]
        (link,) = [e for e in resource["extension"] if e["url"] == RELATED_PERSON_EXTENSION]
        assert {"url": "patient", "valueReference": {"reference": f"Patient/{mother}"}} in link["extension"]

        # A birth certificate at the hub: the real date and no estimate, and a guardian, reach the node.
        status, body = hub.call("PATCH", f"/mpi/{child}", {
            "date_of_birth": "2024-06-11",
            "related_persons": [{"mpi_id": mother, "relationship": "mother"}, {"mpi_id": other, "relationship": "guardian"}],
        })
        assert status == 200, body
        node.sync()
        status, at_node = node.call("GET", f"/mpi/{child}")
        assert at_node["date_of_birth"] == "2024-06-11" and at_node["date_of_birth_estimated"] is False
        assert {(x["mpi_id"], x["relationship"]) for x in at_node["related_persons"]} == {
            (mother, "mother"), (other, "guardian")
        }
        status, wards = node.call("GET", f"/mpi/search?related_to={other}")
        assert {i["mpi_id"] for i in wards["items"]} == {child, namesake}

        # A record of the boy made without his mother, merged into by the linked one at the node:
        # the canonical record has the links at the hub too, and the mother's children follow.
        status, body = _register(node, first_name="Mousa", last_name="Diop", gender="M", date_of_birth="2024-06-11",
                                 force_create=True)
        assert status == 201, body
        plain = body["mpi_id"]
        status, body = node.call("POST", "/mpi/merge", {"source_mpi_id": child, "target_mpi_id": plain,
                                                        "reason": "same boy", "keep_target": False})
        assert status == 200, body
        node.sync()
        status, at_hub = hub.call("GET", f"/mpi/{plain}")
        assert {(x["mpi_id"], x["relationship"]) for x in at_hub["related_persons"]} == {
            (mother, "mother"), (other, "guardian")
        }
        status, kids = hub.call("GET", f"/mpi/search?related_to={mother}")
        assert {i["mpi_id"] for i in kids["items"]} == {plain, twin}
    finally:
        node.stop()
