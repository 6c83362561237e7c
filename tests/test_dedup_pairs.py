"""The dedup's candidate pairs: the one candidate code, each pair met once in a sweep, the best partners kept."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import Api, registry_of

from shared.dedup import Dedup
from shared.dedup.pairs import partners, read_people
from shared.identities.candidates import candidates
from shared.keys import registry_key
from shared.matching import person_of
from shared.storage import schema as t

# Four different people born the same day in the same region: they share the birth-date
# keys and nothing else. A fifth has the first one's name and birth date in another region:
# that pair shares the narrow name keys. Two more: the same name a year apart in two regions.
SAME_DAY = [("Moussa", "Traore"), ("Khady", "Sarr"), ("Cheikh", "Fall"), ("Awa", "Ndiaye")]
DOB = "1990-03-15"


async def _register_all(api: Api) -> dict[str, int]:
    ids = [await api.register(first_name=f, last_name=last, date_of_birth=DOB, gender="M") for f, last in SAME_DAY]
    ids.append(
        await api.register(
            first_name="Moussa", last_name="Traore", date_of_birth=DOB, gender="M", region_code="THI", force_create=True
        )
    )
    ids.append(await api.register(first_name="Ibrahima", last_name="Sow", date_of_birth="1985-06-20", gender="M"))
    ids.append(
        await api.register(
            first_name="Ibrahima", last_name="Sow", date_of_birth="1986-06-20", gender="M", region_code="THI", force_create=True
        )
    )
    async with api.store.read() as conn:
        rows = await conn.execute(sa.select(t.identity.c.mpi_id, t.identity.c.pk).where(t.identity.c.mpi_id.in_(ids)))
        pk_of = {m: int(pk) for m, pk in rows}
    names = ["moussa", "khady", "cheikh", "awa", "moussa_thi", "ibrahima", "ibrahima_thi"]
    return {name: pk_of[mpi_id] for name, mpi_id in zip(names, ids, strict=True)}


async def _every_pair(api: Api, pks: list[int]) -> set[tuple[int, int]]:
    """Pairs that one query per identity finds, with no cut: what a sweep must meet, once each."""
    pairs: set[tuple[int, int]] = set()
    async with api.store.read() as conn:
        rows = list(await conn.execute(sa.select(t.identity).where(t.identity.c.pk.in_(pks))))
        for row in rows:
            (found,) = await candidates(conn, [person_of(row)], limit=1000)
            pairs |= {(min(row.pk, other.pk), max(row.pk, other.pk)) for other, _ in found if other.pk != row.pk}
    return pairs


async def test_a_sweep_scores_each_pair_once(api: Api) -> None:
    pk = await _register_all(api)
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)  # nothing merges: the pairs stay
    everyone = sorted(pk.values())
    distinct = await _every_pair(api, everyone)
    # The name keys pair the namesakes across regions; the birth date alone pairs the four of one day.
    assert {(pk["moussa"], pk["moussa_thi"]), (pk["ibrahima"], pk["ibrahima_thi"]), (pk["khady"], pk["awa"])} <= distinct
    # Slices of two identities: most pairs reach across slices, and are still met once.
    swept = await dedup.sweep(batch=2)
    assert swept.checked == 7 and swept.scored == len(distinct)
    checked = await dedup.check(everyone)
    assert checked.checked == 7 and checked.scored == len(distinct)


async def test_each_identity_keeps_its_best_partners(api: Api) -> None:
    """With room for one partner each, the namesake sharing name and birth date wins over the strangers of the same day."""
    pk = await _register_all(api)
    async with api.store.read() as conn:
        upward = await partners(conn, await read_people(conn, list(pk.values())), 1, upward=True)
        batch = await read_people(conn, list(pk.values()))
        both_ends = await partners(conn, batch, 1, upward=False)
    people = batch.people
    assert (pk["moussa"], pk["moussa_thi"]) in upward and (pk["ibrahima"], pk["ibrahima_thi"]) in upward
    assert all(a < b for a, b in upward) and len(upward) <= len(pk)
    # Each identity's one best partner, from both ends: the namesakes pair, the strangers of one day pair among themselves.
    assert {(pk["moussa"], pk["moussa_thi"]), (pk["ibrahima"], pk["ibrahima_thi"])} <= both_ends
    assert not {p for p in both_ends if pk["moussa_thi"] in p and pk["moussa"] not in p}
    assert set(people) == set(batch.meta) == set(pk.values())


async def test_a_sweep_merges_a_duplicate_among_many_namesakes(api: Api) -> None:
    """A registry where one name is common: the cut keeps the duplicate, and the sweep merges it."""
    registry = registry_of(api.store, candidate_limit=3)
    await registry.load_frequencies()
    for i in range(12):
        await api.register(first_name="Fatou", last_name="Diallo", date_of_birth=f"19{60 + i}-0{1 + i % 9}-1{i % 9}",
                           gender="F", force_create=True)
    original = await api.register(first_name="Fatou", last_name="Diallo", date_of_birth="1991-11-23", gender="F",
                                  phone_number="+221771234567", force_create=True)
    duplicate = await api.register(first_name="Fatou", last_name="Diallo", date_of_birth="1991-11-23", gender="F",
                                   phone_number="+221771234567", force_create=True)
    stats = await Dedup(registry, auto_merge=0.99).sweep(batch=5)
    assert stats.merged == 1
    async with api.store.read() as conn:
        status = dict((await conn.execute(
            sa.select(t.identity.c.mpi_id, t.identity.c.status).where(t.identity.c.mpi_id.in_([original, duplicate]))
        )).all())
    assert status == {original: "active", duplicate: "merged"}


async def test_a_sweep_stopped_early_resumes_where_it_stopped(api: Api) -> None:
    pk = await _register_all(api)
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)
    first = await dedup.sweep(batch=2, stop_after=3)  # two slices of two, then it stops
    assert first.checked == 4 and not first.finished
    rest = await dedup.sweep(batch=2)  # resumes: the three left, and the totals carry on
    assert rest.checked == len(pk) == 7 and rest.finished
    again = await dedup.sweep(batch=2)  # finished: a new sweep starts from the beginning
    assert again.checked == 7
