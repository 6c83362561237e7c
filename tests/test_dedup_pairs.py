"""The dedup's candidate pairs: generated in the database, each pair once, too-common keys skipped."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import Api

from shared.candidate_pairs import neighbour_pairs, pairs_in_range, pairs_touching
from shared.dedup import Dedup
from shared.keys import registry_key
from shared.matching import person_of
from shared.storage import schema as t

# Four different people born the same day in the same region: they share one key (birth
# date + region) and nothing else. A fifth has the first one's name and birth date in
# another region: that pair shares the narrow name keys. Two more, the same name a year
# apart in two regions, share no stored key: only a neighbour key (birth year +-1) meets them.
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


async def test_a_key_held_by_more_than_the_cap_pairs_nobody(api: Api) -> None:
    pk = await _register_all(api)
    everyone = sorted(pk.values())
    narrow = (pk["moussa"], pk["moussa_thi"])
    async with api.store.read() as conn:
        capped = await pairs_in_range(conn, everyone[0], everyone[-1], cap=3)
        wide = await pairs_in_range(conn, everyone[0], everyone[-1], cap=4)
        touching = await pairs_touching(conn, [pk["khady"], pk["moussa"]], cap=3)
    # The birth-date bucket holds four: above a cap of 3 it pairs nobody; the name keys still do.
    assert set(capped) == {narrow} and capped[narrow] >= 2
    assert touching == capped
    # At a cap of 4 the same bucket pairs the four with each other, each pair once, smaller pk first.
    assert len(wide) == 4 * 3 // 2 + 1 and all(a < b for a, b in wide)


async def test_a_neighbour_key_pairs_a_birth_year_typed_one_off(api: Api) -> None:
    pk = await _register_all(api)
    ibrahima = (pk["ibrahima"], pk["ibrahima_thi"])
    async with api.store.read() as conn:
        stored = await pairs_in_range(conn, 0, max(pk.values()), cap=100)
        rows = await conn.execute(sa.select(t.identity).where(t.identity.c.pk.in_(list(pk.values()))))
        people = {row.pk: person_of(row) for row in rows}
        upward = await neighbour_pairs(conn, people, cap=100, upward=True)
        both_ends = await neighbour_pairs(conn, people, cap=100, upward=False)
    assert ibrahima not in stored
    assert set(upward) == set(both_ends) == {ibrahima}


async def test_a_sweep_scores_each_pair_once(api: Api) -> None:
    pk = await _register_all(api)
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)  # nothing merges: the pairs stay
    # The six same-day pairs, the two Moussas, the two Ibrahimas.
    distinct = 8
    # Slices of two identities: most pairs reach across slices, and are still met once.
    swept = await dedup.sweep(batch=2)
    assert swept.checked == 7 and swept.scored == distinct
    checked = await dedup.check(list(pk.values()))
    assert checked.checked == 7 and checked.scored == distinct
    # The Moussas and the Ibrahimas: a review item each, raised when the second was forced in.
    _, body = await api.get("/review", role="supervisor")
    assert body["total"] == 2
