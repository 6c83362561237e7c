"""Cards: issue, read, revoke, re-issue, the public verify and the QR configuration."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.storage import schema as t

CARD = {"campaign_id": "camp_01HXYZ456DEF", "programme_type": "vaccination"}


async def test_issue_card_returns_token_and_qr_once(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, card = await api.post(f"/mpi/{mpi_id}/card", CARD)
    assert status == 201
    assert card["mpi_id"] == mpi_id and card["status"] == "valid"
    assert card["card_code"] == f"DKR-VAC-{mpi_id[-8:]}"
    assert card["qr_svg"].startswith("<svg") and "</svg>" in card["qr_svg"]
    token = card["qr_token"]
    async with api.store.read() as conn:
        stored = (await conn.execute(sa.select(t.card.c.token_hash))).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]  # only the hash is kept
    status, got = await api.get(f"/mpi/{mpi_id}/card")
    assert status == 200
    assert got == {k: card[k] for k in ("mpi_id", "card_code", "campaign_id", "status", "issued_at")}


async def test_verify_is_public_and_returns_no_personal_data(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    _, card = await api.post(f"/mpi/{mpi_id}/card", CARD)
    status, body = await api.get(f"/mpi/verify/{card['qr_token']}", role=None)
    assert status == 200
    assert set(body) == {"status", "programme_count", "verified_at"}
    assert body["status"] == "valid" and body["programme_count"] == 1
    assert mpi_id not in str(body) and "Aminata" not in str(body)


async def test_verify_unknown_token_is_404_in_the_reference_shape(api: Api) -> None:
    status, body = await api.get("/mpi/verify/a3f8c2e1d4b7f9e2a1c3a3f8c2e1d4b7", role=None)
    assert status == 404
    assert body == {"status": "not_found", "message": "This token does not match any known card."}


async def test_verify_malformed_token_is_400(api: Api) -> None:
    status, body = await api.get("/mpi/verify/abc", role=None)
    assert status == 400 and body["status"] == "invalid_token"


async def test_revoke_then_verify_says_revoked(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    _, card = await api.post(f"/mpi/{mpi_id}/card", CARD)
    status, body = await api.post(f"/mpi/{mpi_id}/card/revoke", {"reason": "lost"})
    assert status == 403
    status, body = await api.post(f"/mpi/{mpi_id}/card/revoke", {"reason": "lost"}, role="supervisor")
    assert status == 200 and body["status"] == "revoked"
    status, body = await api.get(f"/mpi/verify/{card['qr_token']}", role=None)
    assert status == 200 and set(body) == {"status", "verified_at"} and body["status"] == "revoked"
    status, body = await api.post(f"/mpi/{mpi_id}/card/revoke", {}, role="supervisor")
    assert status == 404 and body["status"] == "no_valid_card"


async def test_reissue_revokes_the_previous_card(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    _, first = await api.post(f"/mpi/{mpi_id}/card", CARD)
    _, second = await api.post(f"/mpi/{mpi_id}/card", {**CARD, "campaign_id": "camp_2"})
    _, v1 = await api.get(f"/mpi/verify/{first['qr_token']}", role=None)
    _, v2 = await api.get(f"/mpi/verify/{second['qr_token']}", role=None)
    assert v1["status"] == "revoked" and v2["status"] == "valid"
    _, got = await api.get(f"/mpi/{mpi_id}/card")
    assert got["campaign_id"] == "camp_2" and got["status"] == "valid"


async def test_card_of_identity_without_card_is_404(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, body = await api.get(f"/mpi/{mpi_id}/card")
    assert status == 404 and body["status"] == "not_found"


async def test_cards_follow_a_merge(api: Api) -> None:
    target = await api.register(**AMINATA)
    source = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", force_create=True)
    _, card = await api.post(f"/mpi/{source}/card", CARD)
    await api.post(f"/mpi/{target}/programmes", {"programme_type": "nutrition"})
    await api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "dup"}, role="supervisor")
    status, got = await api.get(f"/mpi/{target}/card")
    assert status == 200 and got["card_code"] == card["card_code"]
    _, verified = await api.get(f"/mpi/verify/{card['qr_token']}", role=None)
    assert verified == {**verified, "status": "valid", "programme_count": 2}


async def test_qr_config(api: Api) -> None:
    status, body = await api.get("/mpi/qr-config")
    assert status == 200
    assert body == {"enabled": True, "position": "bottom-right", "size": "standard", "token_type": "opaque_sha256"}
