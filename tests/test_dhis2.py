"""DHIS2 links: link, resolve, conflicts."""

from __future__ import annotations

from conftest import AMINATA, Api


async def test_link_then_resolve(api: Api) -> None:
    mpi_id = await api.register(**{**AMINATA, "external_ids": {}})
    status, body = await api.post(
        f"/mpi/{mpi_id}/link-dhis2", {"dhis2_uid": "xyzDEF123gh", "dhis2_instance_url": "https://dhis2.sante.gov.sn"}
    )
    assert status == 200
    assert body["mpi_id"] == mpi_id and body["dhis2_uid"] == "xyzDEF123gh" and body["linked_at"].endswith("Z")
    status, body = await api.get("/mpi/resolve-dhis2/xyzDEF123gh")
    assert status == 200
    assert set(body) == {"dhis2_uid", "mpi_id", "resolved_at"} and body["mpi_id"] == mpi_id
    status, ident = await api.get(f"/mpi/{mpi_id}")
    assert ident["external_ids"] == {"dhis2_uid": "xyzDEF123gh"}


async def test_linking_twice_is_a_no_op(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    _, first = await api.post(f"/mpi/{mpi_id}/link-dhis2", {"dhis2_uid": "abcDEF123gh"})
    status, again = await api.post(f"/mpi/{mpi_id}/link-dhis2", {"dhis2_uid": "abcDEF123gh"})
    assert status == 200 and again["linked_at"] == first["linked_at"]


async def test_resolve_unlinked_uid_is_404(api: Api) -> None:
    status, body = await api.get("/mpi/resolve-dhis2/notLinked01")
    assert status == 404 and body["status"] == "not_found"


async def test_resolve_malformed_uid_is_400(api: Api) -> None:
    status, body = await api.get("/mpi/resolve-dhis2/x")
    assert status == 400 and body["status"] == "invalid_dhis2_uid"


async def test_link_a_uid_held_by_another_identity_is_409(api: Api) -> None:
    await api.register(**AMINATA)
    other = await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02", gender="M")
    status, body = await api.post(f"/mpi/{other}/link-dhis2", {"dhis2_uid": "abcDEF123gh"})
    assert status == 409 and body["status"] == "external_id_in_use"


async def test_resolve_follows_a_merge(api: Api) -> None:
    source = await api.register(**AMINATA)
    target = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", force_create=True)
    await api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "dup"}, role="supervisor")
    status, body = await api.get("/mpi/resolve-dhis2/abcDEF123gh")
    assert status == 200 and body["mpi_id"] == target
