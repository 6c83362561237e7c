"""Malformed input to every route: always a 4xx JSON body in the one shape, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.routes import ROUTES
from shared.storage import schema as t

BAD_ID = "SN-DKR-26-AAAAAAAA"  # the right shape, a wrong check character


def _path(path: str, mpi_id: str) -> str:
    return (
        path.replace("{mpi_id}", mpi_id)
        .replace("{token}", "a3f8c2e1d4b7f9e2a1c3a3f8c2e1d4b7")
        .replace("{dhis2_uid}", "abcDEF123gh")
    )


def _assert_error(status: int, body: Any, expected: int | None = None) -> None:
    assert 400 <= status < 500, (status, body)
    if expected is not None:
        assert status == expected, body
    assert isinstance(body, dict) and isinstance(body.get("status"), str)
    assert isinstance(body.get("error") or body.get("message"), str)


MALFORMED_BODIES: list[Any] = [
    "not json",
    [],
    42,
    {"unknown_field": 1},
    {"first_name": 12, "last_name": None},
]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body is not None], ids=lambda r: f"{r.method} {r.path}")
async def test_malformed_bodies_are_4xx(api: Api, route: Any) -> None:
    mpi_id = await api.register(**AMINATA)
    path = _path(route.path, mpi_id)
    for body in MALFORMED_BODIES:
        kwargs = {"data": body} if isinstance(body, str) else {"json": body}
        status, answer = await api.call(route.method, path, role="admin", **kwargs)
        _assert_error(status, answer)
    status, answer = await api.call(route.method, path, role="admin", data=b"{" + b" " * 300_000 + b"}")
    _assert_error(status, answer, 413)
    assert answer["status"] == "payload_too_large"


@pytest.mark.parametrize("route", [r for r in ROUTES if "{mpi_id}" in r.path], ids=lambda r: f"{r.method} {r.path}")
async def test_mistyped_mpi_id_is_400_everywhere(api: Api, route: Any) -> None:
    body = {"programme_type": "vaccination", "campaign_id": "c1"} if route.body else None
    status, answer = await api.call(route.method, _path(route.path, BAD_ID), role="admin", json=body)
    _assert_error(status, answer, 400)
    assert answer["status"] in ("invalid_check_character", "validation_error")
    status, answer = await api.call(route.method, _path(route.path, "not-an-id"), role="admin", json=body)
    _assert_error(status, answer, 400)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.role is not None], ids=lambda r: f"{r.method} {r.path}")
async def test_every_private_route_needs_a_token(api: Api, route: Any) -> None:
    path = _path(route.path, BAD_ID)
    status, answer = await api.call(route.method, path, role=None)
    _assert_error(status, answer, 401)
    status, answer = await api.call(route.method, path, role=None, headers={"Authorization": "Bearer mpi_wrong"})
    _assert_error(status, answer, 401)
    status, answer = await api.call(route.method, path, role=None, headers={"Authorization": "Basic abc"})
    _assert_error(status, answer, 401)


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": "A"},
        {**AMINATA, "date_of_birth": "2999-01-01"},
        {**AMINATA, "date_of_birth": "1899-12-31"},
        {**AMINATA, "date_of_birth": "15/03/1995"},
        {**AMINATA, "date_of_birth": 795225600},
        {**AMINATA, "gender": "X"},
        {**AMINATA, "region_code": "dkr"},
        {**AMINATA, "region_code": "DAKAR"},
        {**AMINATA, "country_code": "XX"},
        {**AMINATA, "country_code": "sn"},
        {**AMINATA, "phone_number": "771234567"},
        {**AMINATA, "phone_number": "+2217712"},
        {**AMINATA, "external_ids": ["abc"]},
        {**AMINATA, "external_ids": {"dhis2_uid": 5}},
        {**AMINATA, "external_ids": {"dhis2_uid": "short"}},
        {**AMINATA, "first_name": "   "},
        {**AMINATA, "first_name": "x" * 101},
        {**AMINATA, "nickname": "Mimi"},
        {**AMINATA, "force_create": "maybe"},
    ],
)
async def test_register_validation(api: Api, body: dict[str, Any]) -> None:
    status, answer = await api.post("/mpi/register", body)
    _assert_error(status, answer, 400)
    assert answer["status"] == "validation_error" and answer["details"]
    async with api.store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.identity))).scalar_one() == 0


async def test_unknown_field_is_named(api: Api) -> None:
    status, answer = await api.post("/mpi/register", {**AMINATA, "nickname": "Mimi"})
    assert status == 400 and answer["details"] == [{"field": "nickname", "message": "unknown field"}]


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1000"}, {"limit": "x"}, {"offset": "-1"}, {"date_of_birth": "yesterday"},
     {"region_code": "dk"}, {"bogus": "1"}, {"program": "Not A Programme"}],
)
async def test_search_bad_parameters(api: Api, params: dict[str, str]) -> None:
    status, answer = await api.get("/mpi/search", params=params)
    _assert_error(status, answer, 400)


async def test_unknown_route_and_method_are_json(api: Api) -> None:
    status, answer = await api.get("/nowhere")
    _assert_error(status, answer, 404)
    status, answer = await api.call("DELETE", "/mpi/register")
    _assert_error(status, answer, 405)
