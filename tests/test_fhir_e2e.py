"""A real FHIR client (fhirpy) against real processes: a node on SQLite and, after a sync, its hub.

What a DHIS2 tracker or a hospital system would do: read the CapabilityStatement, create a
Patient, be refused a duplicate, find it (PDQm, paging by next links), $match it, update it,
cross-reference its DHIS2 UID (PIXm); then the same identity through the hub's FHIR face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster import Hub, Node
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.patient import Patient
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from shared import ids
from shared.settings import Settings

DHIS2 = Settings().fhir_dhis2_system
MPI = Settings().fhir_mpi_id_system


def _client(server: Node | Hub) -> AsyncFHIRClient:
    return AsyncFHIRClient(f"{server.url}/fhir", authorization=f"Bearer {server.token}")


def _patient(client: AsyncFHIRClient, family: str, given: str, birth: str, uid: str | None = None) -> Any:
    fields: dict[str, Any] = {
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": birth,
        "address": [{"state": "DKR", "country": "SN"}],
    }
    if uid:
        fields["identifier"] = [{"system": DHIS2, "value": uid}]
    return client.resource("Patient", **fields)


async def test_a_fhir_client_drives_a_node_and_its_hub(hub: Hub, tmp_path: Path) -> None:
    node = Node(tmp_path / "node", hub.enroll("dakar-1", "DKR", tmp_path / "dakar-1.json", hub.url))
    node.start()
    try:
        client = _client(node)
        statement = await client.execute("metadata", method="get")
        CapabilityStatement.model_validate(dict(statement))

        aminata = _patient(client, "Diallo", "Aminata", "1995-03-15", "abcDEF123gh")
        await aminata.save()
        mpi_id = aminata.id
        Patient.model_validate(aminata.serialize())
        assert {"system": MPI, "value": mpi_id, "use": "official"} in aminata.serialize()["identifier"]

        with pytest.raises(OperationOutcome) as refused:
            await _patient(client, "Diallo", "Aminata", "1995-03-15").save()
        assert mpi_id in str(refused.value)

        # five different women called Sow (AwaA, AwaB... born on 1 January of neighbouring
        # years looked like one woman's records to the learned matcher, rightly)
        for n, given in enumerate(("Awa", "Fatou", "Mariama", "Khady", "Ndeye")):
            await _patient(client, "Sow", given, f"19{70 + 3 * n}-0{n + 2}-1{n + 1}").save()
        everyone = await client.resources("Patient").search(family="sow").limit(2).fetch_all()
        assert len(everyone) == 5 and len({p.id for p in everyone}) == 5
        found = await client.resources("Patient").search(family="dia", given="ami").fetch()
        assert [p.id for p in found] == [mpi_id]
        found = await client.resources("Patient").search(identifier=f"{DHIS2}|abcDEF123gh").fetch()
        assert [p.id for p in found] == [mpi_id]

        read = await client.reference("Patient", mpi_id).to_resource()
        read["telecom"] = [{"system": "phone", "value": "+221771234567"}]
        await read.save()
        again = await client.reference("Patient", mpi_id).to_resource()
        assert again["telecom"][0]["value"] == "+221771234567"

        query = {"resourceType": "Patient", "name": [{"family": "Dialo", "given": ["Aminata"]}],
                 "birthDate": "1995-03-15"}
        matched = await client.execute("Patient/$match", method="post", data={
            "resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]})
        Bundle.model_validate(dict(matched))
        assert matched["entry"][0]["resource"]["id"] == mpi_id
        assert matched["entry"][0]["search"]["extension"][0]["valueCode"] in ("certain", "probable")

        pix = await client.execute("Patient/$ihe-pix", method="get",
                                   params={"sourceIdentifier": f"{DHIS2}|abcDEF123gh"})
        Parameters.model_validate(dict(pix))
        assert {"name": "targetId", "valueReference": {"reference": f"Patient/{mpi_id}"}} in pix["parameter"]

        with pytest.raises(ResourceNotFound):
            await client.reference("Patient", ids.mint("SN", "DKR", 26, 5, 77)).to_resource()

        node.sync()
        at_hub = _client(hub)
        statement = await at_hub.execute("metadata", method="get")
        assert statement["software"]["name"] == "MPI hub"
        same = await at_hub.reference("Patient", mpi_id).to_resource()
        assert same["telecom"][0]["value"] == "+221771234567"
        pix = await at_hub.execute("Patient/$ihe-pix", method="get",
                                   params={"sourceIdentifier": f"{DHIS2}|abcDEF123gh"})
        assert {"name": "targetId", "valueReference": {"reference": f"Patient/{mpi_id}"}} in pix["parameter"]
    finally:
        node.stop()
