"""Reading the audit log back: who did what to which identity, and when (GET /audit)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from .ids import IdError, parse
from .schemas import AuditQuery
from .storage import schema as t
from .storage.store import Store

__all__ = ["read_audit"]


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def read_audit(store: Store, query: AuditQuery, actor: str) -> dict[str, Any]:
    """Records matching every filter, newest first, paged: ``{"total", "items"}``."""
    a = t.audit_log
    conditions: list[Any] = []
    if query.actor:
        conditions.append(a.c.actor == query.actor)
    if query.mpi_id:
        try:
            mpi_id = str(parse(query.mpi_id))
        except IdError:
            mpi_id = query.mpi_id.strip().upper()  # a bad ID matches nothing, as search does
        conditions.append(a.c.mpi_id == mpi_id)
    if query.action:
        conditions.append(a.c.action == query.action)
    if query.from_:
        conditions.append(a.c.at >= _stamp(query.from_))
    if query.to:
        conditions.append(a.c.at < _stamp(query.to))
    await store.flush_read_audit()  # what was read a moment ago is in the answer
    async with store.read() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(a).where(*conditions))).scalar_one()
        rows = (
            await conn.execute(
                sa.select(a).where(*conditions).order_by(a.c.pk.desc()).limit(query.limit).offset(query.offset)
            )
        ).all()
    store.audit_read(actor, "audit_read", None, filters=query.model_dump(mode="json", by_alias=True, exclude_none=True))
    return {
        "total": int(total),
        "items": [
            {"id": r.pk, "at": r.at, "actor": r.actor, "action": r.action, "mpi_id": r.mpi_id,
             "detail": json.loads(r.detail or "{}")}
            for r in rows
        ],
    }
