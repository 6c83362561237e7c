"""Seeding the hub: a register loaded in bulk (``mpi-hub import``), its rows not matched one by one.

A ministry starts from what it has (a census or campaign list, a DHIS2 export), duplicates
included. The node's import (``bulk.py``) matches every row against the registry and the
rows before it; at the hub that is the dedup's work, done a slice at a time: every imported
identity is queued for it (``dedup_pending``, the queue the hub fills when it applies a
node's registrations). The serving hub's dedup job drains that queue, or ``mpi-hub dedup
run`` does at once; a list the size of the registry is better followed by ``mpi-hub dedup
sweep`` (each pair checked once).

Each batch of ``BATCH`` rows is one transaction through the identity layer's one write path
(``Registry.insert_new``): minted IDs, the identity rows, their external ids, search tokens
and blocking keys (COPY), one ``identity.create`` change per identity in the hub's change
log and in the feed that the nodes of its region pull, an audit record; with them the dedup
queue, what each line became (``import_line``) and how far the file is read. A killed import
run again resumes after its last committed batch: nobody is created twice.

What becomes of a row (its status in the map):
- ``created``: a new identity, queued for the dedup check;
- ``blocked``: one of its external ids is linked already, to an identity of the registry or
  to an earlier row of the file: nothing is written, the map gives that identity's ID;
- ``invalid``: a bad value or a bad line (reported with its line number), nothing written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tqdm import tqdm

from .bulk import file_sha256, lines_done, read_rows, record_batch, validate
from .dedup import enqueue
from .identities.lookup import text_in
from .registration import taken_external_ids
from .registry import Registry
from .schemas import RegisterIn
from .storage import schema as t
from .storage.store import Tx

__all__ = ["BATCH", "SeedStats", "seed_rows"]

BATCH = 5000


@dataclass
class SeedStats:
    created: int = 0
    blocked: int = 0
    invalid: int = 0
    skipped: int = 0  # lines done by an earlier, interrupted run
    seconds: float = 0.0
    file_sha256: str = ""
    report: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.created + self.blocked + self.invalid


async def seed_rows(
    registry: Registry, path: Path, *, actor: str = "import", batch: int = BATCH, progress: bool = False
) -> SeedStats:
    """Load ``path`` into the hub's registry a batch at a time; resumable, see the module docstring."""
    sha = file_sha256(path)
    stats = SeedStats(file_sha256=sha)
    started = time.perf_counter()
    done = await lines_done(registry.store, sha)
    bar = tqdm(desc=f"import {path.name}", unit=" rows", disable=not progress, file=sys.stderr)
    pending: list[tuple[int, dict[str, Any] | str]] = []
    try:
        for number, row in read_rows(path):
            if number <= done:
                stats.skipped += 1
                continue
            pending.append((number, row))
            if len(pending) >= batch:
                await _load(registry, sha, path, pending, stats, actor)
                bar.update(len(pending))
                pending = []
        if pending:
            await _load(registry, sha, path, pending, stats, actor)
            bar.update(len(pending))
    finally:
        bar.close()
        stats.seconds = time.perf_counter() - started
    return stats


async def _load(
    registry: Registry, sha: str, path: Path, rows: list[tuple[int, dict[str, Any] | str]], stats: SeedStats, actor: str
) -> None:
    """One batch, one transaction."""
    lines: list[tuple[int, str | None, str]] = []
    report: list[dict[str, Any]] = []
    valid: list[tuple[int, RegisterIn]] = []
    for number, row in rows:
        body = validate(row)
        if isinstance(body, str):
            lines.append((number, None, "invalid"))
            report.append({"line": number, "action": "error", "error": body})
        else:
            valid.append((number, body))
    async with registry.store.write(actor) as tx:
        taken = await taken_external_ids(tx.conn, [body for _, body in valid])
        accepted: list[tuple[int, RegisterIn]] = []
        first: dict[tuple[str, str], int] = {}  # an external id -> the accepted row (this batch) that holds it
        blocked: list[tuple[int, tuple[str, str]]] = []
        for number, body in valid:
            held = list((body.external_ids or {}).items())
            clash = next((pair for pair in held if pair in taken or pair in first), None)
            if clash is not None:
                blocked.append((number, clash))
                continue
            for pair in held:
                first[pair] = len(accepted)
            accepted.append((number, body))
        people = [(body, registry.person(body)) for _, body in accepted]
        new_ids = await registry.insert_new(tx, people) if people else []
        lines += [(number, mpi_id, "created") for (number, _), mpi_id in zip(accepted, new_ids, strict=True)]
        for number, pair in blocked:
            owner = taken[pair] if pair in taken else new_ids[first[pair]]
            lines.append((number, owner, "blocked"))
            report.append({"line": number, "action": "blocked", "existing_mpi_id": owner,
                           "matched_fields": f"external_ids.{pair[0]}"})
        await _queue_for_dedup(tx, new_ids)
        lines.sort()
        await record_batch(tx, sha, path, lines)
    stats.created += len(accepted)
    stats.blocked += len(blocked)
    stats.invalid += len(rows) - len(valid)
    stats.report.extend(sorted(report, key=lambda e: int(e["line"])))


async def _queue_for_dedup(tx: Tx, mpi_ids: list[str]) -> None:
    if mpi_ids:
        pks = await tx.conn.execute(sa.select(t.identity.c.pk).where(text_in(tx.conn, t.identity.c.mpi_id, mpi_ids)))
        await enqueue(tx, list(pks.scalars()))
