"""The sync state a replica keeps in ``node_meta``, written inside a write transaction."""

from __future__ import annotations

import sqlalchemy as sa

from ..storage import schema as t
from ..storage.store import Tx

__all__ = ["put_meta"]


async def put_meta(tx: Tx, values: dict[str, str]) -> None:
    """Set ``node_meta`` keys in this transaction; the store's copy follows once it commits."""
    await tx.conn.execute(sa.delete(t.node_meta).where(t.node_meta.c.key.in_(list(values))))
    await tx.conn.execute(sa.insert(t.node_meta), [{"key": k, "value": v} for k, v in values.items()])
    meta = tx._store.meta
    tx.after_commit.append(lambda: meta.update(values))
