"""The dedup's candidate pairs: generated in the database, each pair once, too-common keys skipped."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import Api

from shared.candidate_pairs import neighbour_pairs, pairs_in_range, pairs_touching
from shared.dedup import Dedup
from shared.keys import registry_key
from shared.matching import Person, person_of
from shared.matching.blocking import BUCKET_CAP
from shared.storage import schema as t

# Four different people born the same day in the same region: they share one key (birth
# date + region) and nothing else. A fifth has the first one's name and birth date in
# another region: that pair shares the narrow name keys. Two more: the same name a year
# apart in two regions.
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


async def _people(api: Api, pks: list[int]) -> dict[int, Person]:
    async with api.store.read() as conn:
        rows = await conn.execute(sa.select(t.identity).where(t.identity.c.pk.in_(pks)))
        return {row.pk: person_of(row) for row in rows}


async def test_a_key_held_by_more_than_the_cap_pairs_nobody(api: Api) -> None:
    pk = await _register_all(api)
    everyone = sorted(pk.values())
    narrow = (pk["moussa"], pk["moussa_thi"])
    same_day = {(a, b) for a in everyone[:4] for b in everyone[:4] if a < b}
    async with api.store.read() as conn:
        capped = await pairs_in_range(conn, everyone[0], everyone[-1], cap=3)
        wide = await pairs_in_range(conn, everyone[0], everyone[-1], cap=4)
        touching = await pairs_touching(conn, [pk["khady"], pk["moussa"]], cap=3)
    # The birth-date buckets hold four or more: above a cap of 3 they pair nobody; the name keys still do.
    assert narrow in capped and not same_day & set(capped)
    assert set(touching) == {p for p in capped if {pk["khady"], pk["moussa"]} & set(p)}
    # At a cap of 4 the birth date + region bucket pairs the four, each pair once, smaller pk first.
    assert same_day <= set(wide) and all(a < b for a, b in wide)


async def test_neighbour_pairs_are_met_once_from_the_smaller_pk(api: Api) -> None:
    pk = await _register_all(api)
    people = await _people(api, list(pk.values()))
    async with api.store.read() as conn:
        upward = await neighbour_pairs(conn, people, cap=100, upward=True)
        both_ends = await neighbour_pairs(conn, people, cap=100, upward=False)
    assert set(upward) <= set(both_ends) and all(a < b for a, b in both_ends)


async def test_a_sweep_scores_each_pair_once(api: Api) -> None:
    pk = await _register_all(api)
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)  # nothing merges: the pairs stay
    everyone = sorted(pk.values())
    async with api.store.read() as conn:
        distinct = set(await pairs_in_range(conn, everyone[0], everyone[-1], cap=BUCKET_CAP))
        distinct |= set(await neighbour_pairs(conn, await _people(api, everyone), BUCKET_CAP, upward=True))
    assert {(pk["moussa"], pk["moussa_thi"]), (pk["ibrahima"], pk["ibrahima_thi"])} <= distinct
    # Slices of two identities: most pairs reach across slices, and are still met once.
    swept = await dedup.sweep(batch=2)
    assert swept.checked == 7 and swept.scored == len(distinct)
    checked = await dedup.check(everyone)
    assert checked.checked == 7 and checked.scored == len(distinct)
