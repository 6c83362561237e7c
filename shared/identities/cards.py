"""The cards of identities as stored: issuing, revoking, and the PII-free status of other posts' cards.

Cards go from valid to revoked, never back. A replica that does not hold a card's identity
keeps only its status (``card_status``: token hash, status, programme count), which verify
consults too.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..storage import schema as t
from ..storage.store import Tx
from .fields import Row

__all__ = ["issue_card", "keep_card_status", "revoke_card", "revoke_token", "revoke_valid_cards", "store_card"]


async def revoke_valid_cards(tx: Tx, row: Row) -> int:
    """Before a new card: the identity's valid cards are revoked; returns how many were."""
    previous = (
        await tx.conn.execute(sa.select(t.card.c.token_hash).where(t.card.c.identity_pk == row.pk, t.card.c.status == "valid"))
    ).scalars().all()
    for old in previous:
        await tx.conn.execute(sa.update(t.card).where(t.card.c.token_hash == old).values(status="revoked", revoked_at=tx.now))
        tx.change("card.revoke", row.mpi_id, {"token_hash": old, "reason": "reissued"})
    return len(previous)


async def issue_card(tx: Tx, row: Row, named: str, card: dict[str, Any], programme_count: int) -> None:
    """A local issue of ``card`` (card_code, campaign_id, programme_type, token_hash)."""
    await tx.conn.execute(sa.insert(t.card).values(identity_pk=row.pk, status="valid", issued_at=tx.now, **card))
    # The change names the ID the caller gave: whose card it is, should a merge be undone.
    tx.change("card.issue", named, {**card, "programme_count": programme_count, "issued_at": tx.now})


async def revoke_card(tx: Tx, card: Row, mpi_id: str, reason: str | None) -> None:
    """A local revocation of one card."""
    await tx.conn.execute(sa.update(t.card).where(t.card.c.pk == card.pk).values(status="revoked", revoked_at=tx.now))
    tx.change("card.revoke", mpi_id, {"token_hash": card.token_hash, "reason": reason})


async def keep_card_status(tx: Tx, token: str, status: str, count: int) -> None:
    """Remember the status of a card whose identity this replica does not hold (revoked stays revoked)."""
    s = t.card_status
    current = (await tx.conn.execute(sa.select(s.c.status).where(s.c.token_hash == token))).scalar()
    if current is None:
        await tx.conn.execute(sa.insert(s).values(token_hash=token, status=status, programme_count=count, updated_at=tx.now))
    elif current != "revoked":
        await tx.conn.execute(
            sa.update(s).where(s.c.token_hash == token).values(status=status, programme_count=count, updated_at=tx.now)
        )


async def store_card(tx: Tx, pk: int, p: dict[str, Any], status: str, issued_at: str) -> None:
    """A card issued elsewhere, on an identity this replica holds (a revocation seen first wins)."""
    token = p["token_hash"]
    revoked = (await tx.conn.execute(sa.select(t.card_status.c.status).where(t.card_status.c.token_hash == token))).scalar()
    await tx.conn.execute(
        tx.insert_ignore(t.card).values(
            card_code=p["card_code"],
            identity_pk=pk,
            campaign_id=p["campaign_id"],
            programme_type=p["programme_type"],
            token_hash=token,
            status="revoked" if revoked == "revoked" else status,
            issued_at=issued_at,
        )
    )
    if status == "revoked":
        await tx.conn.execute(sa.update(t.card).where(t.card.c.token_hash == token).values(status="revoked", revoked_at=tx.now))
    await tx.conn.execute(sa.delete(t.card_status).where(t.card_status.c.token_hash == token))


async def revoke_token(tx: Tx, token: str) -> None:
    """A revocation made elsewhere: of the card if this replica holds it, else of its status."""
    done = await tx.conn.execute(
        sa.update(t.card).where(t.card.c.token_hash == token, t.card.c.status != "revoked").values(status="revoked", revoked_at=tx.now)
    )
    exists = (await tx.conn.execute(sa.select(t.card.c.pk).where(t.card.c.token_hash == token))).first()
    if exists is None and done.rowcount == 0:
        await keep_card_status(tx, token, "revoked", 0)
