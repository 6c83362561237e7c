"""A sweep cut into slices for ``mpi-hub dedup worker`` processes, and the scored pairs they leave.

``plan_sweep`` cuts the active identities into slices of pks, ``(lo_pk, hi_pk]``, plus one
last step, the decision (``lo_pk = -1``), which no worker can claim before every slice is
scored: the slices score their pairs against the same registry (nothing is merged while
they run) and write them to ``dedup_pair``; then one worker decides all the pairs in one
order, best first.  So the merges are the same whatever the number of workers, and
whichever worker took which slice.  ``claim_slice`` takes a slice with ``FOR UPDATE SKIP
LOCKED`` and a lease (pushed on by ``renew_slice``); a lapsed lease frees it again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..matching import MatchResult
from ..storage import schema as t
from ..storage.store import Store, Tx, utc_now
from .pairs import Found, Identity
from .stats import DedupStats

__all__ = [
    "DECIDE", "Slice", "claim_slice", "finish_slice", "plan_sweep", "read_pairs", "renew_slice", "slices_left",
    "write_pairs",
]

DECIDE = -1  # lo_pk of a sweep's last step: deciding the pairs its slices scored


@dataclass
class Slice:
    job: str
    lo_pk: int
    hi_pk: int

    @property
    def decides(self) -> bool:
        return self.lo_pk == DECIDE


async def write_pairs(tx: Tx, job: str, found: Sequence[Found]) -> None:
    """Keep a slice's scored pairs until the sweep's decision (a slice done again replaces them)."""
    if found:
        await tx.conn.execute(
            tx.insert_ignore(t.dedup_pair),
            [
                {
                    "job": job, "a_pk": f.a, "b_pk": f.b, "score": f.result.score, "hard_conflict": f.result.hard_conflict,
                    "band": f.result.band, "matched_fields": json.dumps(f.result.matched_fields),
                    "features": json.dumps([list(pair) for pair in f.result.features]),
                }
                for f in found
            ],
        )


async def read_pairs(store: Store, job: str) -> tuple[list[Found], dict[int, Identity]]:
    """The pairs a sweep scored, best first (score, then pks), and their identities as they are now."""
    p, a, b = t.dedup_pair, t.identity.alias("a"), t.identity.alias("b")
    async with store.read() as conn:
        rows = list(await conn.execute(
            sa.select(p, a.c.mpi_id.label("a_id"), a.c.created_at.label("a_at"), a.c.region_code.label("a_region"),
                      b.c.mpi_id.label("b_id"), b.c.created_at.label("b_at"), b.c.region_code.label("b_region"))
            .join(a, a.c.pk == p.c.a_pk).join(b, b.c.pk == p.c.b_pk)
            .where(p.c.job == job)
            .order_by(p.c.score.desc(), p.c.a_pk, p.c.b_pk)
        ))
    found, who = [], {}
    for row in rows:
        result = MatchResult(
            score=row.score, matched_fields=json.loads(row.matched_fields), band=row.band,
            hard_conflict=row.hard_conflict, features=tuple((str(n), float(w)) for n, w in json.loads(row.features)),
        )
        found.append(Found(int(row.a_pk), int(row.b_pk), result))
        who[int(row.a_pk)] = Identity(row.a_id, row.a_at, row.a_region)
        who[int(row.b_pk)] = Identity(row.b_id, row.b_at, row.b_region)
    return found, who


async def plan_sweep(store: Store, job: str = "sweep", *, size: int = 1000, restart: bool = False) -> int:
    """Cut a sweep of the active identities into slices of about ``size`` (and its decision
    step); returns how many slices were made.

    A sweep whose slices are not all done is left alone (0), unless ``restart``.
    """
    async with store.write("dedup") as tx:
        s = t.dedup_slice
        if not restart:
            open_ = (await tx.conn.execute(
                sa.select(sa.func.count()).select_from(s).where(s.c.job == job, s.c.status != "done")
            )).scalar_one()
            if open_:
                return 0
        await tx.conn.execute(sa.delete(s).where(s.c.job == job))
        await tx.conn.execute(sa.delete(t.dedup_pair).where(t.dedup_pair.c.job == job))
        ranked = (
            sa.select(t.identity.c.pk, sa.func.row_number().over(order_by=t.identity.c.pk).label("n"))
            .where(t.identity.c.status == "active")
            .subquery()
        )
        ends = [int(pk) for pk in (await tx.conn.execute(
            sa.select(ranked.c.pk).where(ranked.c.n % size == 0).order_by(ranked.c.pk)
        )).scalars()]
        top = (await tx.conn.execute(sa.select(sa.func.max(t.identity.c.pk)))).scalar()
        if top is not None and (not ends or ends[-1] < int(top)):
            ends.append(int(top))
        rows, lo = [], 0
        for hi in ends:
            rows.append({"job": job, "lo_pk": lo, "hi_pk": hi, "status": "todo", "attempts": 0,
                         "checked": 0, "merged": 0, "queued": 0})
            lo = hi
        if rows:
            rows.append({"job": job, "lo_pk": DECIDE, "hi_pk": DECIDE, "status": "todo", "attempts": 0,
                         "checked": 0, "merged": 0, "queued": 0})
            await tx.conn.execute(sa.insert(s), rows)
        tx.audit("dedup_sweep_planned", None, job=job, slices=len(rows) - 1 if rows else 0)
        return len(rows) - 1 if rows else 0


def _later(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def claim_slice(store: Store, worker: str, lease_seconds: float, job: str = "sweep") -> Slice | None:
    """Take the first slice nobody holds (never claimed, or its lease lapsed), or None; the
    decision step only once every slice is scored.

    ``FOR UPDATE SKIP LOCKED``: two workers claiming at once never wait on, nor take, the same row.
    """
    s = t.dedup_slice
    other = s.alias("other")
    scoring_left = (
        sa.select(other.c.lo_pk).where(other.c.job == job, other.c.lo_pk != DECIDE, other.c.status != "done").exists()
    )
    async with store.writer.begin() as conn:
        row = (await conn.execute(
            sa.select(s.c.job, s.c.lo_pk, s.c.hi_pk)
            .where(s.c.job == job, sa.or_(s.c.status == "todo",
                                          sa.and_(s.c.status == "claimed", s.c.lease_until < utc_now())),
                   sa.or_(s.c.lo_pk != DECIDE, ~scoring_left))
            .order_by(s.c.lo_pk)
            .limit(1)
            .with_for_update(skip_locked=True, of=s)
        )).first()
        if row is None:
            return None
        await conn.execute(
            sa.update(s).where(s.c.job == job, s.c.lo_pk == row.lo_pk)
            .values(status="claimed", worker=worker, lease_until=_later(lease_seconds), attempts=s.c.attempts + 1)
        )
    return Slice(job, int(row.lo_pk), int(row.hi_pk))


async def renew_slice(store: Store, piece: Slice, worker: str, lease_seconds: float) -> bool:
    """The heartbeat: push the lease on; False when the slice is no longer this worker's."""
    s = t.dedup_slice
    async with store.writer.begin() as conn:
        done = await conn.execute(
            sa.update(s).where(s.c.job == piece.job, s.c.lo_pk == piece.lo_pk, s.c.worker == worker,
                               s.c.status == "claimed")
            .values(lease_until=_later(lease_seconds))
        )
    return bool(done.rowcount)


async def finish_slice(store: Store, piece: Slice, worker: str, stats: DedupStats) -> bool:
    """Mark a slice done; True when it was the sweep's last step (its audit record is written)."""
    s = t.dedup_slice
    async with store.write("dedup") as tx:
        await tx.conn.execute(
            sa.update(s).where(s.c.job == piece.job, s.c.lo_pk == piece.lo_pk)
            .values(status="done", worker=worker, done_at=utc_now(), checked=stats.checked, merged=stats.merged,
                    queued=stats.queued)
        )
        left = (await tx.conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.job == piece.job, s.c.status != "done")
        )).scalar_one()
        if left:
            return False
        total = (await tx.conn.execute(
            sa.select(sa.func.sum(s.c.checked), sa.func.sum(s.c.merged), sa.func.sum(s.c.queued)).where(s.c.job == piece.job)
        )).one()
        tx.audit("dedup_sweep", None, job=piece.job, checked=int(total[0] or 0), merged=int(total[1] or 0),
                 queued=int(total[2] or 0), workers=True)
        return True


async def slices_left(store: Store, job: str = "sweep") -> int:
    s = t.dedup_slice
    async with store.read() as conn:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(s).where(s.c.job == job, s.c.status != "done")
        )).scalar_one())
