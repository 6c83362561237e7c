"""The dedup's candidate pairs: generated in the database, each pair once, too-common keys skipped."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import Api

from shared.candidate_pairs import pairs_in_range, pairs_touching
from shared.dedup import Dedup
from shared.keys import registry_key
from shared.storage import schema as t

# Four different people born the same day in the same region: they share one key (birth
# date + region) and nothing else. A fifth has the first one's name and birth date in
# another region: that pair shares the narrow name keys.
SAME_DAY = [("Moussa", "Traore"), ("Khady", "Sarr"), ("Cheikh", "Fall"), ("Awa", "Ndiaye")]
DOB = "1990-03-15"


async def _register_all(api: Api) -> dict[str, int]:
    ids = [await api.register(first_name=f, last_name=last, date_of_birth=DOB, gender="M") for f, last in SAME_DAY]
    ids.append(
        await api.register(
            first_name="Moussa", last_name="Traore", date_of_birth=DOB, gender="M", region_code="THI", force_create=True
        )
    )
    async with api.store.read() as conn:
        rows = await conn.execute(sa.select(t.identity.c.mpi_id, t.identity.c.pk).where(t.identity.c.mpi_id.in_(ids)))
        pk_of = {m: int(pk) for m, pk in rows}
    return {name: pk_of[mpi_id] for name, mpi_id in zip(["moussa", "khady", "cheikh", "awa", "moussa_thi"], ids, strict=True)}


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


async def test_a_sweep_scores_each_pair_once(api: Api) -> None:
    pk = await _register_all(api)
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)  # nothing merges: the pairs stay
    async with api.store.read() as conn:
        distinct = await pairs_in_range(conn, 0, max(pk.values()), cap=100)
    assert len(distinct) == 7  # the six same-day pairs and the two Moussas
    # Slices of two identities: most pairs reach across slices, and are still met once.
    swept = await dedup.sweep(batch=2)
    assert swept.checked == 5 and swept.scored == len(distinct)
    checked = await dedup.check(list(pk.values()))
    assert checked.checked == 5 and checked.scored == len(distinct)
    # Only the two Moussas are one person: one review item (raised when the second was forced in).
    _, body = await api.get("/review", role="supervisor")
    assert body["total"] == 1
