"""The review queue: pairs a person must decide, and the decisions ("merge" or "not_same").

Items come from the hub's dedup (``probable``, ``hard_conflict``), from clerks who forced a
registration over a blocking match (``force_create``), from bulk import
(``import_probable``) and from sync (concurrent edits). A ``not_same`` decision is kept in
``not_same`` and appended to the change log (``review.not_same``), so it travels like any
write: neither the sweep nor a node raises that pair again.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import BadRequest, Conflict, NotFound
from .schemas import MergeIn, ReviewDecisionIn, ReviewQuery
from .storage import schema as t
from .storage.store import Tx

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["decide", "is_not_same", "list_reviews", "open_pair_review", "pair_key"]


def pair_key(a: str, b: str) -> str:
    return " ".join(sorted((a, b)))


async def is_not_same(conn: AsyncConnection, a: str, b: str) -> bool:
    low, high = sorted((a, b))
    row = await conn.execute(sa.select(t.not_same.c.mpi_a).where(t.not_same.c.mpi_a == low, t.not_same.c.mpi_b == high))
    return row.first() is not None


async def open_pair_review(
    tx: Tx,
    reason: str,
    first: str,
    second: str,
    score: float | None,
    matched_fields: list[str],
    detail: dict[str, Any] | None = None,
) -> bool:
    """Queue a pair for review, unless it was decided ``not_same`` or is queued already."""
    key = pair_key(first, second)
    if await is_not_same(tx.conn, first, second):
        return False
    queued = await tx.conn.execute(
        sa.select(t.review_item.c.pk).where(t.review_item.c.pair_key == key, t.review_item.c.status == "open")
    )
    if queued.first() is not None:
        return False
    regions = (
        await tx.conn.execute(
            sa.select(t.identity.c.region_code).where(t.identity.c.mpi_id.in_([first, second])).distinct()
        )
    ).scalars().all()
    await tx.conn.execute(
        sa.insert(t.review_item).values(
            reason=reason,
            mpi_ids=json.dumps([first, second]),
            similarity_score=score,
            matched_fields=json.dumps(matched_fields),
            status="open",
            actor=tx.actor,
            created_at=tx.now,
            detail=json.dumps(detail or {}),
            pair_key=key,
            regions=" ".join(sorted(regions)),
        )
    )
    tx.change("review.open", first, {"reason": reason, "mpi_ids": [first, second], "similarity_score": score})
    return True


def _band(score: float | None, registry: Registry) -> str | None:
    if score is None:
        return None
    th = registry.matcher.thresholds
    return "certain" if score >= th.certain else "probable" if score >= th.probable else "possible" if score >= th.possible else None


def _item(row: Any, registry: Registry) -> dict[str, Any]:
    return {
        "id": row.pk,
        "mpi_ids": json.loads(row.mpi_ids),
        "similarity_score": row.similarity_score,
        "matched_fields": json.loads(row.matched_fields),
        "reason": row.reason,
        "band": _band(row.similarity_score, registry),
        "status": row.status,
        "created_at": row.created_at[:19] + "Z",
        "opened_by": row.actor,
        "regions": (row.regions or "").split(),
        "detail": json.loads(row.detail or "{}"),
        "decision": row.decision,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at[:19] + "Z" if row.decided_at else None,
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
        raise Conflict(f"review item {item_id} was decided already ({row.decision})", code="already_decided")
    ids = json.loads(row.mpi_ids)
    if len(ids) != 2:
        raise BadRequest("this item is not a pair", code="not_a_pair")
    answer: dict[str, Any] = {"id": item_id, "decision": body.decision}
    if body.decision == "merge":
        async with registry.store.read() as conn:
            a, b = (await registry.find(conn, ids[0])).row, (await registry.find(conn, ids[1])).row
        if a.pk == b.pk:
            raise Conflict("the two identities are merged already", code="already_merged")
        target, source = (a, b) if (a.created_at, a.mpi_id) <= (b.created_at, b.mpi_id) else (b, a)
        merged = await registry.merge(
            MergeIn(source_mpi_id=source.mpi_id, target_mpi_id=target.mpi_id, reason=body.reason or f"review item {item_id}"),
            actor,
        )
        answer["canonical_mpi_id"] = merged["canonical_mpi_id"]
        answer["merged_mpi_id"] = merged["merged_mpi_id"]
    async with registry.store.write(actor) as tx:
        if body.decision == "not_same":
            low, high = sorted(ids)
            await tx.conn.execute(
                tx.insert_ignore(t.not_same).values(mpi_a=low, mpi_b=high, decided_at=tx.now, actor=actor)
            )
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
        tx.change("review.decision", ids[0], {"item": item_id, "decision": body.decision, "mpi_ids": ids})
        tx.audit("review_decision", ids[0], item=item_id, decision=body.decision, mpi_ids=ids, reason=body.reason,
                 score=row.similarity_score, closed=done.rowcount)
    answer["status"] = "decided"
    return answer
