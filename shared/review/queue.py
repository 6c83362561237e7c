"""The review queue as a data manager sees it: listing items, and deciding one ("merge" or "not_same").

A ``merge`` decision is the registry's merge (the older registration survives); a
``not_same`` decision is recorded (``items.record_not_same``) and appended to the change log
(``review.not_same``), so it travels like any write. Either decision is also kept as a
labelled pair, with the two identities as they stood (``labels``): the model learns from it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from ..errors import AlreadyDecided, AlreadyMerged, NotAPair, NotFound
from ..identities.fields import Row, api_time
from ..identities.lookup import find
from ..registry import Registry
from ..schemas import MergeIn, ReviewDecisionIn, ReviewQuery
from ..storage import schema as t
from .items import record_not_same
from .labels import record_label, snapshot

__all__ = ["decide", "list_reviews"]


def _band(score: float | None, registry: Registry) -> str | None:
    if score is None:
        return None
    th = registry.matcher.thresholds
    return "certain" if score >= th.certain else "probable" if score >= th.probable else "possible" if score >= th.possible else None


def _item(row: Row, registry: Registry) -> dict[str, Any]:
    return {
        "id": row.pk,
        "mpi_ids": json.loads(row.mpi_ids),
        "similarity_score": row.similarity_score,
        "matched_fields": json.loads(row.matched_fields),
        "reason": row.reason,
        "band": _band(row.similarity_score, registry),
        "status": row.status,
        "created_at": api_time(row.created_at),
        "opened_by": row.actor,
        "regions": (row.regions or "").split(),
        "detail": json.loads(row.detail or "{}"),
        "decision": row.decision,
        "decided_by": row.decided_by,
        "decided_at": api_time(row.decided_at) if row.decided_at else None,
    }


async def list_reviews(registry: Registry, query: ReviewQuery) -> dict[str, Any]:
    """GET /review: items by status, region, band, reason and age; counts by reason."""
    r = t.review_item
    conditions: list[Any] = [r.c.status == query.status]
    if query.region_code:
        conditions.append(r.c.regions.contains(query.region_code))
    if query.reason:
        conditions.append(r.c.reason == query.reason)
    if query.band:
        th = registry.matcher.thresholds
        low, high = {"certain": (th.certain, 2.0), "probable": (th.probable, th.certain), "possible": (th.possible, th.probable)}[
            query.band
        ]
        conditions += [r.c.similarity_score >= low, r.c.similarity_score < high]
    if query.min_age_days:
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=query.min_age_days)).strftime("%Y-%m-%dT%H:%M:%S")
        conditions.append(r.c.created_at <= cutoff)
    async with registry.store.read() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(r).where(*conditions))).scalar_one()
        counts = {
            reason: n
            for reason, n in await conn.execute(sa.select(r.c.reason, sa.func.count()).where(*conditions).group_by(r.c.reason))
        }
        rows = await conn.execute(
            sa.select(r).where(*conditions).order_by(r.c.created_at, r.c.pk).limit(query.limit).offset(query.offset)
        )
        items = [_item(row, registry) for row in rows]
    return {"total": total, "counts": counts, "items": items}


async def decide(registry: Registry, item_id: int, body: ReviewDecisionIn, actor: str) -> dict[str, Any]:
    """POST /review/{id}/decision: merge the pair (older registration survives) or record not_same."""
    async with registry.store.read() as conn:
        row = (await conn.execute(sa.select(t.review_item).where(t.review_item.c.pk == item_id))).first()
    if row is None:
        raise NotFound(f"no review item {item_id}")
    if row.status != "open":
        raise AlreadyDecided(f"review item {item_id} was decided already ({row.decision})")
    ids = json.loads(row.mpi_ids)
    if len(ids) != 2:
        raise NotAPair("this item is not a pair")
    answer: dict[str, Any] = {"id": item_id, "decision": body.decision}
    async with registry.store.read() as conn:  # the pair as the reviewer saw it: a labelled pair
        persons = await snapshot(conn, registry.store.dialect, ids)
    if body.decision == "merge":
        async with registry.store.read() as conn:
            a, b = (await find(conn, ids[0])).row, (await find(conn, ids[1])).row
        if a.pk == b.pk:
            raise AlreadyMerged("the two identities are merged already")
        target, source = (a, b) if (a.created_at, a.mpi_id) <= (b.created_at, b.mpi_id) else (b, a)
        merged = await registry.merge(
            MergeIn(source_mpi_id=source.mpi_id, target_mpi_id=target.mpi_id, reason=body.reason or f"review item {item_id}"),
            actor,
        )
        answer["canonical_mpi_id"] = merged["canonical_mpi_id"]
        answer["merged_mpi_id"] = merged["merged_mpi_id"]
    async with registry.store.write(actor) as tx:
        if body.decision == "not_same":
            low, high = await record_not_same(tx, ids[0], ids[1], actor)
            tx.change("review.not_same", low, {"mpi_ids": [low, high], "reason": body.reason})
            # Every open item about this pair is answered by the same decision.
            pair_items = [t.review_item.c.pair_key == row.pair_key] if row.pair_key else [t.review_item.c.pk == item_id]
        else:
            pair_items = [t.review_item.c.pk == item_id]
        done = await tx.conn.execute(
            sa.update(t.review_item)
            .where(sa.or_(*pair_items), t.review_item.c.status == "open")
            .values(status="decided", decision=body.decision, decided_by=actor, decided_at=tx.now)
        )
        await record_label(tx, item_id, body.decision, persons)
        tx.change("review.decision", ids[0], {"item": item_id, "decision": body.decision, "mpi_ids": ids})
        tx.audit("review_decision", ids[0], item=item_id, decision=body.decision, mpi_ids=ids, reason=body.reason,
                 score=row.similarity_score, closed=done.rowcount)
    answer["status"] = "decided"
    return answer
