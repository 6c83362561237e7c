"""Cards: issuance, revocation, the card of an identity, and the public verify.

A card carries an opaque random token in its QR code; only the token's SHA-256 is
stored (``token_type: opaque_sha256``), so a stolen database cannot mint cards, and the
token is shown once, in the answer that issues the card. ``verify`` never returns
personal data nor the MPI ID: only valid/revoked and the programme count.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
from typing import Any

import segno
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import BadRequest, NotFound, NoValidCard
from .identities import cards, edit
from .identities.fields import Row, api_time
from .identities.lookup import find, programme_count
from .registry import Registry
from .schemas import CardIn, CardRevokeIn
from .settings import Settings
from .storage import schema as t
from .storage.store import utc_now

__all__ = ["Cards", "card_code", "render_card_svg", "token_hash"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_QR_MM = {"small": 16, "standard": 22, "large": 30}
_CARD_W_MM, _CARD_H_MM, _MARGIN_MM = 85.6, 53.98, 4.0  # ID-1, the size of a bank card


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def card_code(region: str, programme_type: str, mpi_id: str) -> str:
    """``RRR-PRG-XXXXXXXX``: region, programme abbreviation, the ID's last eight characters."""
    prg = re.sub(r"[^A-Z]", "", programme_type.upper())[:3].ljust(3, "X")
    return f"{region}-{prg}-{mpi_id[-8:]}"


def render_card_svg(code: str, campaign_id: str, token: str, position: str, size: str) -> str:
    """A printable ID-1 card with its code and, laid out as qr-config says, the QR of the token."""
    qr = segno.make(token, error="m", micro=False)
    buffer = io.BytesIO()
    qr_mm = _QR_MM[size]
    qr.save(buffer, kind="svg", xmldecl=False, svgns=False, nl=False, border=2, scale=1, omitsize=True)
    inner = buffer.getvalue().decode()
    modules = qr.symbol_size(border=2)[0]
    x = _CARD_W_MM - _MARGIN_MM - qr_mm if position.endswith("right") else _MARGIN_MM
    y = _CARD_H_MM - _MARGIN_MM - qr_mm if position.startswith("bottom") else _MARGIN_MM
    text_x = _MARGIN_MM if position.endswith("right") else _MARGIN_MM + qr_mm + 3
    text_y = _MARGIN_MM + 6 if position.startswith("bottom") else _CARD_H_MM - _MARGIN_MM - 10
    inner = re.sub(r"^<svg[^>]*>", "", inner).removesuffix("</svg>")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_CARD_W_MM}mm" height="{_CARD_H_MM}mm" '
        f'viewBox="0 0 {_CARD_W_MM} {_CARD_H_MM}">'
        f'<rect width="{_CARD_W_MM}" height="{_CARD_H_MM}" rx="3" fill="#fff" stroke="#222" stroke-width="0.3"/>'
        f'<text x="{text_x}" y="{text_y}" font-family="monospace" font-size="4.2">{code}</text>'
        f'<text x="{text_x}" y="{text_y + 6}" font-family="sans-serif" font-size="3">{_xml(campaign_id)}</text>'
        f'<g transform="translate({x:.2f} {y:.2f}) scale({qr_mm / modules:.4f})">{inner}</g>'
        "</svg>"
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Cards:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.store = registry.store
        self.settings = settings

    def qr_config(self) -> dict[str, Any]:
        return {
            "enabled": self.settings.qr_enabled,
            "position": self.settings.qr_position,
            "size": self.settings.qr_size,
            "token_type": "opaque_sha256",
        }

    async def issue(self, mpi_id: str, body: CardIn, actor: str) -> dict[str, Any]:
        """Issue a card; the previous valid card of the identity is revoked in the same write."""
        token = secrets.token_urlsafe(32)
        digest = token_hash(token)
        async with self.store.write(actor) as tx:
            found = await find(tx.conn, mpi_id)
            row = found.row
            revoked = await cards.revoke_valid_cards(tx, row)
            # A card for a programme means the person takes part in it.
            await edit.add_programme(tx, row, body.programme_type, tx.now, found.requested)
            code = card_code(row.region_code, body.programme_type, row.mpi_id)
            card = {
                "card_code": code,
                "campaign_id": body.campaign_id,
                "programme_type": body.programme_type,
                "token_hash": digest,
            }
            await cards.issue_card(tx, row, found.requested, card, await programme_count(tx.conn, row.pk))
            tx.audit("card_issue", row.mpi_id, card_code=code, revoked_previous=revoked)
        answer: dict[str, Any] = {
            "mpi_id": row.mpi_id,
            "card_code": code,
            "campaign_id": body.campaign_id,
            "programme_type": body.programme_type,
            "status": "valid",
            "issued_at": api_time(tx.now),
            "qr_token": token,
            "verify_path": f"/mpi/verify/{token}",
        }
        if self.settings.qr_enabled:
            answer["qr_svg"] = render_card_svg(
                code, body.campaign_id, token, self.settings.qr_position, self.settings.qr_size
            )
        return answer

    async def _latest(self, conn: AsyncConnection, pk: int) -> Row | None:
        return (
            await conn.execute(
                sa.select(t.card)
                .where(t.card.c.identity_pk == pk)
                .order_by((t.card.c.status == "valid").desc(), t.card.c.issued_at.desc(), t.card.c.pk.desc())
                .limit(1)
            )
        ).first()

    @staticmethod
    def _view(mpi_id: str, card: Row) -> dict[str, Any]:
        return {
            "mpi_id": mpi_id,
            "card_code": card.card_code,
            "campaign_id": card.campaign_id,
            "status": card.status,
            "issued_at": api_time(card.issued_at),
        }

    async def get(self, mpi_id: str, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            found = await find(conn, mpi_id)
            card = await self._latest(conn, found.row.pk)
        if card is None:
            raise NotFound(f"identity {found.row.mpi_id} has no card")
        self.store.audit_read(actor, "card_read", found.row.mpi_id)
        return self._view(found.row.mpi_id, card)

    async def revoke(self, mpi_id: str, body: CardRevokeIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            found = await find(tx.conn, mpi_id)
            card = await self._latest(tx.conn, found.row.pk)
            if card is None or card.status != "valid":
                raise NoValidCard(f"identity {found.row.mpi_id} has no valid card")
            await cards.revoke_card(tx, card, found.row.mpi_id, body.reason)
            tx.audit("card_revoke", found.row.mpi_id, card_code=card.card_code, reason=body.reason)
            card = (await tx.conn.execute(sa.select(t.card).where(t.card.c.pk == card.pk))).one()
        return self._view(found.row.mpi_id, card)

    async def verify(self, token: str) -> dict[str, Any]:
        if not _TOKEN.fullmatch(token):
            raise BadRequest("a card token is 16-128 URL-safe characters", code="invalid_token")
        async with self.store.read() as conn:
            card = (
                await conn.execute(
                    sa.select(t.card.c.status, t.card.c.identity_pk).where(t.card.c.token_hash == token_hash(token))
                )
            ).first()
            if card is None:
                # A card issued at another post, for a person this replica does not hold.
                remote = (
                    await conn.execute(
                        sa.select(t.card_status.c.status, t.card_status.c.programme_count).where(
                            t.card_status.c.token_hash == token_hash(token)
                        )
                    )
                ).first()
                if remote is None:
                    raise NotFound("This token does not match any known card.")
                now = api_time(utc_now())
                if remote.status == "valid":
                    return {"status": "valid", "programme_count": remote.programme_count, "verified_at": now}
                return {"status": "revoked", "verified_at": now}
            count = await programme_count(conn, card.identity_pk)
        now = api_time(utc_now())
        if card.status == "valid":
            return {"status": "valid", "programme_count": count, "verified_at": now}
        return {"status": "revoked", "verified_at": now}
