"""Forgetting an identity that left this replica's scope (a node's regions); its cards stay verifiable."""

from __future__ import annotations

import sqlalchemy as sa

from ..matching import NameFrequencies
from ..storage import schema as t
from ..storage.store import Tx
from .cards import keep_card_status
from .index import recount, unindex
from .lookup import programme_count, row_by_pk

__all__ = ["evict"]


async def evict(tx: Tx, frequencies: NameFrequencies, pk: int) -> None:
    """Delete the identity, what hangs off it and the IDs merged into it; keep its cards' statuses."""
    count = await programme_count(tx.conn, pk)
    cards = (await tx.conn.execute(sa.select(t.card.c.token_hash, t.card.c.status).where(t.card.c.identity_pk == pk))).all()
    for token, status in cards:
        await keep_card_status(tx, token, status, count)
    whole = await row_by_pk(tx.conn, pk)
    if whole.status == "active":
        recount(tx, frequencies, whole, None)
    await unindex(tx, pk)
    for table in (t.programme, t.external_id, t.card):
        await tx.conn.execute(sa.delete(table).where(table.c.identity_pk == pk))
    # Identities merged into this one redirect to it: they leave with it.
    await tx.conn.execute(sa.delete(t.identity).where(t.identity.c.merged_into == whole.mpi_id))
    await tx.conn.execute(sa.delete(t.identity).where(t.identity.c.pk == pk))
