"""Candidate generation on a real store: the cut keeps the right identity, the 201 says probable."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import AMINATA, Api, initialise, make_store, registry_of

from shared.identities.candidates import candidates
from shared.matching import Person
from shared.matching.blocking import BUCKET_CAP, index_keys, query_keys
from shared.schemas import RegisterIn
from shared.storage import schema as t

REGIONS = ["DKR", "THI", "ZIG", "SLO", "KLK", "TAM"]


def _body(first: str, last: str, dob: dt.date | None, region: str, phone: str | None = None) -> RegisterIn:
    return RegisterIn.model_validate(
        {
            "first_name": first,
            "last_name": last,
            "date_of_birth": dob.isoformat() if dob else None,
            "gender": "M",
            "region_code": region,
            "country_code": "SN",
            "phone_number": phone,
        }
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_common_name_never_pushes_the_right_identity_out(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """600 Mamadou Diallos (200 born the same year, in the same region as the original):
    the whole name is too common to read, the narrow keys find the original, and what is
    scored stays under the limit."""
    store, _ = make_store(kind, tmp_path, request)
    await initialise(store)
    registry = registry_of(store, candidate_limit=100)
    namesakes = [
        _body(
            "Mamadou",
            "Diallo",
            dt.date(1990 if i < 200 else 1950 + i % 60, 1 + i % 12, 1 + i % 28),
            "DKR" if i < 300 else REGIONS[i % 6],
        )
        for i in range(600)
    ]
    original = _body("Mamadou", "Diallo", dt.date(1990, 3, 29), "DKR", "+221771234567")
    items: list[tuple[RegisterIn, Person]] = [(b, registry.person(b)) for b in [*namesakes, original]]
    try:
        async with store.write("test") as tx:
            ids = await registry.insert_new(tx, items)
        original_id = ids[-1]
        duplicates = [
            _body("Mamadou", "Diallo", dt.date(1990, 3, 29), "KLK"),  # moved, no phone
            _body("Mamadou", "Diallo", dt.date(1991, 3, 29), "DKR"),  # a year off
            _body("Diallo", "Mamadou", None, "DKR", "+221771234567"),  # swapped, no date, same phone
            _body("Mamadu", "Jallow", dt.date(1990, 3, 29), "THI"),  # spelt the English way, moved
        ]
        async with store.read() as conn:
            for body in duplicates:
                found = await registry.candidates(conn, registry.person(body))
                assert len(found) <= 100
                assert original_id in [row.mpi_id for row, _ in found], body
            # The keys every namesake shares (the name alone) hold more than the cap: skipped.
            shared_keys = set(index_keys(registry.person(original))) & set(
                index_keys(registry.person(namesakes[450]))
            )
            counts = [
                (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(t.blocking_key)
                        .where(t.blocking_key.c.key == k)
                    )
                ).scalar_one()
                for k in shared_keys
            ]
            assert counts and min(counts) > BUCKET_CAP
    finally:
        await store.close()


def test_query_keys_are_bounded() -> None:
    """A query reads a bounded number of keys, even with compound names and no known sex."""
    p = Person("Mame Diarra", "Ndiaye Sow", dt.date(1990, 5, 6), None, "DKR", "+221771234567")
    assert len(query_keys(p)) < 250


async def _review_items(api: Api) -> list[dict[str, Any]]:
    status, body = await api.get("/review", role="supervisor")
    assert status == 200, body
    return list(body["items"])


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_probable_registration_answers_201_probable_and_is_queued(api: Api) -> None:
    first = await api.register(**AMINATA)
    assert await _review_items(api) == []
    # Same name, sex and region, no birth date and no phone: close, not certain (the
    # learned matcher, model learned-2026-12-06b, scores it about 0.89; with a 1 January
    # placeholder in the same year it says 0.996, certain: that is how duplicates look).
    body = {
        "first_name": AMINATA["first_name"],
        "last_name": AMINATA["last_name"],
        "gender": "F",
        "region_code": AMINATA["region_code"],
        "country_code": "SN",
    }
    status, created = await api.post("/mpi/register", body)
    assert status == 201, created
    assert created["confidence"] == "probable"
    items = await _review_items(api)
    assert [sorted(i["mpi_ids"]) for i in items] == [sorted([first, created["mpi_id"]])]
    assert items[0]["reason"] == "register_probable"
    # the review item says which features carried the score (the learned matcher's contributions)
    from shared.matching import FEATURES

    carried = items[0]["detail"]["features"]
    assert carried and all(c["feature"] in FEATURES and isinstance(c["log_odds"], float) for c in carried)
    status, other = await api.post(
        "/mpi/register", {**body, "first_name": "Moussa", "last_name": "Traore", "gender": "M"}
    )
    assert status == 201 and other["confidence"] == "new_identity"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_batch_gets_the_candidates_each_query_gets_alone(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Bulk import and the hub's dedup ask for many people in one statement: same answers."""
    store, _ = make_store(kind, tmp_path, request)
    await initialise(store)
    registry = registry_of(store, candidate_limit=5)
    names = [("Awa", "Ndiaye"), ("Fatou", "Diallo"), ("Moussa", "Traore"), ("Aminata", "Sow")]
    bodies = [
        _body(first, last, dt.date(1980 + i % 7, 1 + i % 12, 1 + i % 27), REGIONS[i % 6], f"+2217712345{i % 50:02d}")
        for i, (first, last) in enumerate(names * 30)
    ]
    try:
        async with store.write("test") as tx:
            await registry.insert_new(tx, [(b, registry.person(b)) for b in bodies])
        queries = [
            Person("Awa", "Ndiay", dt.date(1981, 2, 2), "F", "THI"),
            Person("Diallo", "Fatou", None, None, "DKR"),
            Person("Moussa", "Traoré", dt.date(1982, 3, 3), "M", "ZIG", "+221771234502"),
            Person("Nobody", "Known", dt.date(2001, 1, 1), "F", "KLK"),
        ]
        async with store.read() as conn:
            together = await candidates(conn, queries, 5)
            alone = [(await candidates(conn, [q], 5))[0] for q in queries]
        assert [[row.mpi_id for row, _ in found] for found in together] == [
            [row.mpi_id for row, _ in found] for found in alone
        ]
        assert [len(found) for found in together][:3] == [5, 5, 5] and together[3] == []
    finally:
        await store.close()
