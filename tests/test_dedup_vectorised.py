"""The dedup's vectorised path against today's per-pair scoring, on a few thousand synthetic identities.

The path (``shared.dedup.pairs``): partners ranked in the database from the blocking keys,
the batch's columns read once, every pair's features in one matrix and the trees over all
of it.  Today's path asked the candidate code (``identities.candidates``) for each
identity's best partners and scored each identity's set with ``Matcher.rank``.  On the same
registry both must find the same pairs, give them the same scores and evidence, and so
the same decisions; a sweep then merges exactly along the pairs both call certain.  The
incremental check (``Dedup.check``, new identities against everyone) takes the same path.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
from conftest import Api, registry_of

from shared.dedup import Dedup
from shared.dedup.pairs import Found, partners, read_people, score_batch
from shared.identities.candidates import candidates
from shared.matching import MatchResult, person_of
from shared.registry import Registry
from shared.schemas import RegisterIn
from shared.storage import schema as t

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from synth import generate, to_person  # noqa: E402

N = 2500
AUTO = 0.99


async def _load(registry: Registry, n: int) -> None:
    items, seen = [], set()
    for rec in generate(n, seed=23, dup_rate=0.25, lookalike_rate=0.05):
        body = {k: rec[k] for k in ("first_name", "last_name", "date_of_birth", "gender", "region_code",
                                    "phone_number") if rec.get(k) is not None}
        if rec.get("dhis2_uid") and rec["dhis2_uid"] not in seen:
            seen.add(rec["dhis2_uid"])
            body["external_ids"] = {"dhis2_uid": rec["dhis2_uid"]}
        items.append((RegisterIn.model_validate({**body, "country_code": "SN"}), to_person(rec)))
    for i in range(0, len(items), 1000):
        async with registry.store.write("test") as tx:
            await registry.insert_new(tx, items[i : i + 1000])


async def _today(registry: Registry, pks: list[int], upward: bool) -> tuple[set[tuple[int, int]], list[Found]]:
    """Today's pairs and decisions: the candidate code per batch, then ``rank`` of each set, pair by pair."""
    matcher, limit = registry.matcher, registry.candidate_limit
    async with registry.store.read() as conn:
        rows = list(await conn.execute(
            sa.select(t.identity).where(t.identity.c.pk.in_(pks), t.identity.c.status == "active").order_by(t.identity.c.pk)
        ))
        ext: dict[int, dict[str, str]] = defaultdict(dict)
        for pk, system, value in await conn.execute(sa.select(t.external_id.c.identity_pk, t.external_id.c.system,
                                                              t.external_id.c.value)):
            ext[pk][system] = value
        asking = [person_of(row, ext.get(row.pk)) for row in rows]
        found = await candidates(conn, asking, limit if upward else limit + 1,
                                 after=[row.pk for row in rows] if upward else None)
    pairs: set[tuple[int, int]] = set()
    people = {row.pk: person for row, person in zip(rows, asking, strict=True)}
    for row, partners_ in zip(rows, found, strict=True):
        for other, _ in partners_:
            if other.pk != row.pk:
                pairs.add((min(row.pk, other.pk), max(row.pk, other.pk)))
                people[other.pk] = person_of(other, ext.get(other.pk))
    by_a: dict[int, list[int]] = defaultdict(list)
    for a, b in sorted(pairs):
        by_a[a].append(b)
    out = []
    for a, others in by_a.items():
        for b, result in matcher.rank(people[a], [(b, people[b]) for b in others], limit=len(others), min_score=0.0):
            if result.hard_conflict == "dhis2_uid":
                rest = matcher.compare(replace(people[a], external_ids={}), replace(people[b], external_ids={}))
                result = replace(rest, hard_conflict="dhis2_uid")
            if result.score >= matcher.thresholds.probable:
                out.append(Found(a, b, result))
    out.sort(key=lambda f: (-f.result.score, f.a, f.b))
    return pairs, out


def _decision(result: MatchResult) -> str:
    return "merge" if result.score >= AUTO and result.hard_conflict is None else "queue"


async def _vectorised(registry: Registry, pks: list[int], upward: bool, batch: int) -> tuple[set[tuple[int, int]], list[Found]]:
    pairs: set[tuple[int, int]] = set()
    found: list[Found] = []
    for i in range(0, len(pks), batch):
        async with registry.store.read() as conn:
            people = await read_people(conn, pks[i : i + batch])
            mine = await partners(conn, people, registry.candidate_limit, upward=upward)
        pairs |= mine
        found += score_batch(registry.matcher, people, mine)
    found.sort(key=lambda f: (-f.result.score, f.a, f.b))
    return pairs, found


async def test_the_vectorised_path_decides_as_pair_by_pair_scoring(api: Api) -> None:
    registry = registry_of(api.store)
    await _load(registry, N)
    await registry.load_frequencies()
    async with api.store.read() as conn:
        pks = list((await conn.execute(sa.select(t.identity.c.pk).order_by(t.identity.c.pk))).scalars())
    assert len(pks) == N

    # The sweep's view: slices of 400, each identity against its larger partners.
    today_pairs, today = await _today(registry, pks, upward=True)
    pairs, found = await _vectorised(registry, pks, upward=True, batch=400)
    assert pairs == today_pairs and len(pairs) > 5 * N
    assert [(f.a, f.b) for f in found] == [(f.a, f.b) for f in today]
    assert [f.result for f in found] == [f.result for f in today]  # scores, fields, conflicts, features
    decisions = {(f.a, f.b): _decision(f.result) for f in found}
    assert sum(d == "merge" for d in decisions.values()) >= 100 and "queue" in decisions.values()

    # The incremental check's view: the last 300 against everyone.
    late = pks[-300:]
    today_pairs, today = await _today(registry, late, upward=False)
    pairs, found = await _vectorised(registry, late, upward=False, batch=300)
    assert pairs == today_pairs and [f.result for f in found] == [f.result for f in today]
    assert [(f.a, f.b) for f in found] == [(f.a, f.b) for f in today]

    # A sweep merges along the certain pairs, and only those.
    sweep_pairs, certain = await _today(registry, pks, upward=True)
    auto = [(f.a, f.b) for f in certain if _decision(f.result) == "merge"]
    stats = await Dedup(registry, auto_merge=AUTO).sweep(batch=400)
    assert stats.checked == N and stats.scored == len(sweep_pairs) and stats.merged > 0
    async with api.store.read() as conn:
        into = {pk: mpi for pk, mpi in await conn.execute(sa.select(t.identity.c.pk, t.identity.c.mpi_id))}
        merged_into = dict((await conn.execute(sa.select(t.identity.c.mpi_id, t.identity.c.merged_into))).all())

    def root(mpi_id: str) -> str:
        while merged_into.get(mpi_id):
            mpi_id = merged_into[mpi_id]
        return mpi_id

    # every merge joins two identities linked by a chain of certain pairs
    parent = {m: m for m in into.values()}

    def find(m: str) -> str:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    for a, b in auto:
        parent[find(into[a])] = find(into[b])
    for mpi_id in into.values():
        if merged_into.get(mpi_id):
            assert find(mpi_id) == find(root(mpi_id))
    assert stats.merged == sum(1 for m in into.values() if merged_into.get(m))
    # and each certain pair ends as one identity, or queued (a merge the identity layer
    # refused), or was left alone because one side had been merged away into another group
    # earlier in the sweep (decide: a chain of look-alikes is not merged on one link)
    async with api.store.read() as conn:
        queued = {frozenset(json.loads(m)) for (m,) in await conn.execute(
            sa.select(t.review_item.c.mpi_ids).where(t.review_item.c.status == "open"))}
    for a, b in auto:
        assert (root(into[a]) == root(into[b]) or frozenset((into[a], into[b])) in queued
                or merged_into.get(into[a]) or merged_into.get(into[b]))
