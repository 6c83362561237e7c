"""The sync state a replica keeps in ``node_meta``, written inside a write transaction."""

from __future__ import annotations

import sqlalchemy as sa

from ..storage import schema as t
from ..storage.store import Tx

__all__ = ["CAUGHT_UP", "RESTORED", "put_meta"]

# A node's cursors: its changes the hub acknowledged (seq, hash), and its place in the hub's feed.
_ACKED, _ACKED_HASH, _PULL, _PULL_HASH = "sync_acked_seq", "sync_acked_hash", "sync_pull_pos", "sync_pull_hash"
# Catching up after a restore: set by ``mpi-node restore`` (JSON: what the copy held); the own
# changes (after, upto] the feed brings back for applying; what the last catch-up found (JSON).
RESTORED, _OWN, CAUGHT_UP = "sync_restored", "sync_own_range", "sync_caught_up"


async def put_meta(tx: Tx, values: dict[str, str]) -> None:
    """Set ``node_meta`` keys in this transaction; the store's copy follows once it commits."""
    await tx.conn.execute(sa.delete(t.node_meta).where(t.node_meta.c.key.in_(list(values))))
    await tx.conn.execute(sa.insert(t.node_meta), [{"key": k, "value": v} for k, v in values.items()])
    meta = tx._store.meta
    tx.after_commit.append(lambda: meta.update(values))
