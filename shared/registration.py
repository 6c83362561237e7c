"""Registering many people at once (bulk import), with the same decisions as one register.

One batch costs a handful of statements however many rows it holds: the blocking keys of
every row are looked up in one query, the candidates read in one more, the new identities
written by ``Registry.insert_new``. Rows of the same batch are matched against each other
too (an in-memory blocking index of the rows accepted so far), so a list that holds the
same mother twice blocks the second row exactly as two calls of register would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .identities.candidates import candidates
from .identities.fields import Row
from .matching import MatchResult, Person, index_keys, query_keys
from .registry import Registry
from .schemas import RegisterIn
from .storage import schema as t
from .storage.store import Tx

__all__ = ["Outcome", "candidates_many", "register_batch", "taken_external_ids"]

_CHUNK = 900  # stays under every SQLite's limit of bound parameters


@dataclass
class Outcome:
    """What became of one row: ``created`` (maybe with a probable match), ``blocked`` or ``conflict``."""

    action: str
    mpi_id: str | None = None
    match_mpi_id: str | None = None
    match: MatchResult | None = None
    match_batch_pos: int | None = None  # the match is a row accepted earlier in this batch
    message: str | None = None


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


async def candidates_many(
    registry: Registry, conn: AsyncConnection, people: Sequence[Person], keys: Sequence[list[int]] | None = None
) -> list[list[tuple[Row, Person]]]:
    """For each person, the active identities to score, most promising first (``identities.candidates``)."""
    return await candidates(conn, people, registry.candidate_limit, keys)


async def taken_external_ids(conn: AsyncConnection, bodies: Sequence[RegisterIn]) -> dict[tuple[str, str], str]:
    pairs = sorted({(s, v) for b in bodies for s, v in (b.external_ids or {}).items()})
    taken: dict[tuple[str, str], str] = {}
    for chunk in _chunks(pairs):
        rows = await conn.execute(
            sa.select(t.external_id.c.system, t.external_id.c.value, t.identity.c.mpi_id)
            .join(t.identity, t.identity.c.pk == t.external_id.c.identity_pk)
            .where(sa.tuple_(t.external_id.c.system, t.external_id.c.value).in_(list(chunk)))
        )
        taken.update({(s, v): mpi_id for s, v, mpi_id in rows})
    return taken


async def register_batch(registry: Registry, tx: Tx, bodies: Sequence[RegisterIn]) -> list[Outcome]:
    """Register ``bodies`` in ``tx`` in order, deciding each row as ``register`` would."""
    people = [registry.person(b) for b in bodies]
    keyed = [query_keys(p) for p in people]
    found = await candidates_many(registry, tx.conn, people, keyed)
    taken = await taken_external_ids(tx.conn, bodies)
    outcomes: list[Outcome] = []
    accepted: list[tuple[RegisterIn, Person]] = []
    accepted_row: list[int] = []  # index in ``bodies`` of each accepted row
    pending: dict[int, list[int]] = defaultdict(list)  # blocking key -> positions in ``accepted``
    for i, (body, person) in enumerate(zip(bodies, people, strict=True)):
        in_batch = sorted({pos for key in keyed[i] for pos in pending.get(key, ())})
        candidates: list[tuple[Any, Person]] = [(("db", row), p) for row, p in found[i]]
        candidates += [(("batch", pos), accepted[pos][1]) for pos in in_batch]
        ranked = registry.matcher.rank(person, candidates, limit=1)
        best = ranked[0] if ranked else None
        outcome = Outcome("created")
        if best is not None:
            (where, ref), result = best
            outcome.match = result
            outcome.match_mpi_id = ref.mpi_id if where == "db" else None
            outcome.match_batch_pos = None if where == "db" else ref
            if registry.blocks(result) and not body.force_create:
                outcome.action = "blocked"
        clash = next((f"{s} {v}" for s, v in (body.external_ids or {}).items() if (s, v) in taken), None)
        if outcome.action != "blocked" and clash is not None:
            outcome.action, outcome.message = "conflict", f"{clash} is already linked to another identity"
        if outcome.action == "created":
            pos = len(accepted)
            accepted.append((body, person))
            accepted_row.append(i)
            for key in index_keys(person):
                pending[key].append(pos)
            for s, v in (body.external_ids or {}).items():
                taken[(s, v)] = "(this batch)"
        outcomes.append(outcome)
    new_ids = await registry.insert_new(tx, accepted) if accepted else []
    for row_index, mpi_id in zip(accepted_row, new_ids, strict=True):
        outcomes[row_index].mpi_id = mpi_id
    for outcome in outcomes:
        if outcome.match_batch_pos is not None:
            outcome.match_mpi_id = new_ids[outcome.match_batch_pos]
    return outcomes
