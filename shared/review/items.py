"""Review items: the one place that writes them, and the ``not_same`` decisions that close pairs for good.

Items come from the hub's dedup (``probable``, ``hard_conflict``), from clerks who forced a
registration over a blocking match (``force_create``), from bulk import (``import_probable``)
and from sync (``concurrent_edit``, and items a node opened). A ``not_same`` decision is
kept in ``not_same`` and travels like any write: neither the sweep nor a node raises that
pair again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..identities.lookup import text_in
from ..storage import schema as t
from ..storage.store import Tx

__all__ = [
    "PairReview", "is_not_same", "open_item", "open_pair_review", "open_pair_reviews", "pair_key", "record_not_same",
]


def pair_key(a: str, b: str) -> str:
    return " ".join(sorted((a, b)))


async def is_not_same(conn: AsyncConnection, a: str, b: str) -> bool:
    low, high = sorted((a, b))
    row = await conn.execute(sa.select(t.not_same.c.mpi_a).where(t.not_same.c.mpi_a == low, t.not_same.c.mpi_b == high))
    return row.first() is not None


async def open_item(
    tx: Tx,
    reason: str,
    mpi_ids: list[str],
    *,
    score: float | None = None,
    matched_fields: list[str] | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    pair: bool = False,
) -> None:
    """Write one open review item (no checks, no change: see ``open_pair_review`` for pairs)."""
    values: dict[str, Any] = {
        "reason": reason,
        "mpi_ids": json.dumps(mpi_ids),
        "similarity_score": score,
        "matched_fields": json.dumps(matched_fields or []),
        "status": "open",
        "actor": actor or tx.actor,
        "created_at": tx.now,
        "detail": json.dumps(detail or {}),
    }
    if pair:
        regions = (
            await tx.conn.execute(sa.select(t.identity.c.region_code).where(t.identity.c.mpi_id.in_(mpi_ids)).distinct())
        ).scalars().all()
        values.update(pair_key=pair_key(mpi_ids[0], mpi_ids[1]), regions=" ".join(sorted(regions)))
    await tx.conn.execute(sa.insert(t.review_item).values(**values))


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
    if await is_not_same(tx.conn, first, second):
        return False
    queued = await tx.conn.execute(
        sa.select(t.review_item.c.pk).where(t.review_item.c.pair_key == pair_key(first, second), t.review_item.c.status == "open")
    )
    if queued.first() is not None:
        return False
    await open_item(tx, reason, [first, second], score=score, matched_fields=matched_fields, detail=detail, pair=True)
    tx.change("review.open", first, {"reason": reason, "mpi_ids": [first, second], "similarity_score": score})
    return True


async def record_not_same(tx: Tx, a: str, b: str, actor: str) -> tuple[str, str]:
    """Remember that ``a`` and ``b`` are two people (idempotent); returns the pair, sorted."""
    low, high = sorted((a, b))
    await tx.conn.execute(tx.insert_ignore(t.not_same).values(mpi_a=low, mpi_b=high, decided_at=tx.now, actor=actor))
    return low, high


@dataclass(frozen=True, slots=True)
class PairReview:
    """A pair to queue (``open_pair_reviews``); ``regions``: the two identities' region codes."""

    reason: str
    first: str
    second: str
    score: float | None
    matched_fields: list[str]
    detail: dict[str, Any]
    regions: tuple[str, ...]


async def open_pair_reviews(tx: Tx, items: Sequence[PairReview]) -> int:
    """``open_pair_review`` for many pairs in a few statements: the ``not_same`` decisions and
    the open items read once, the new items written in one insert; returns how many were opened."""
    if not items:
        return 0
    ids = sorted({m for item in items for m in (item.first, item.second)})
    decided = {
        (a, b)
        for a, b in await tx.conn.execute(
            sa.select(t.not_same.c.mpi_a, t.not_same.c.mpi_b).where(text_in(tx.conn, t.not_same.c.mpi_a, ids))
        )
    }
    keys = sorted({pair_key(item.first, item.second) for item in items})
    r = t.review_item
    queued = set(
        (await tx.conn.execute(sa.select(r.c.pair_key).where(text_in(tx.conn, r.c.pair_key, keys), r.c.status == "open")))
        .scalars()
    )
    rows = []
    for item in items:
        key = pair_key(item.first, item.second)
        if tuple(sorted((item.first, item.second))) in decided or key in queued:
            continue
        queued.add(key)
        rows.append({
            "reason": item.reason, "mpi_ids": json.dumps([item.first, item.second]), "similarity_score": item.score,
            "matched_fields": json.dumps(item.matched_fields), "status": "open", "actor": tx.actor,
            "created_at": tx.now, "detail": json.dumps(item.detail), "pair_key": key,
            "regions": " ".join(sorted(set(item.regions))),
        })
        tx.change("review.open", item.first,
                  {"reason": item.reason, "mpi_ids": [item.first, item.second], "similarity_score": item.score})
    if rows:
        await tx.conn.execute(sa.insert(r), rows)
    return len(rows)
