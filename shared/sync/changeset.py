"""Change sets: build, compress, sign and check the one envelope every transport carries.

An envelope is ``{node_id, key_id, first_seq, last_seq, prev_hash, last_hash, body}`` and a
few optional header fields (``to``: the one node a hub envelope is for; ``sent_at``;
``pull``: where the sender's own pull cursor stands). On the wire::

    b"MPE1" | u16 header length | header (canonical JSON) | body (zlib) | Ed25519 signature (64 bytes)

The signature covers everything before it. The body is a zlib stream (with a preset
dictionary of the words every change set repeats) of a JSON list of rows. A pushed row is
``[hlc - previous hlc, kind, mpi_id, payload]``: node id, sequence, key id and both hashes of
every change are left out and recomputed by the receiver from ``prev_hash``; the chain must
then end at the signed ``last_hash``, so nothing left out can be forged. Registrations also
leave out what repeats inside their payload (their ID, ``updated_at``, ``status``).

Acknowledgements (``b"MPA1"``) are small signed statements "the hub holds node N up to
sequence S whose hash is H". Replies and bundle files are ``parts``: a list of envelopes and
acknowledgements in one byte string.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .changelog import KINDS, Change, canonical_json, change_hash
from .errors import BadEnvelope, BadSignature

__all__ = [
    "MAX_BODY",
    "Ack",
    "Envelope",
    "FeedItem",
    "decode_changes",
    "decode_feed",
    "decode_own",
    "join_parts",
    "open_ack",
    "open_envelope",
    "seal_ack",
    "seal_changes",
    "seal_feed",
    "seal_own",
    "split_parts",
]

_MAGIC = b"MPE1"
_ACK_MAGIC = b"MPA1"
_PARTS_MAGIC = b"MPP1"
_SIG = 64
MAX_BODY = 64 * 1024 * 1024  # decompressed: a bomb stops here
_HEADER_KEYS = {"node_id", "key_id", "first_seq", "last_seq", "prev_hash", "last_hash"}
# What nearly every change set repeats: priming zlib with it makes small sets small. Both ends
# must hold the very same bytes, so this is a literal of format MPE1, never derived from code
# that may change (a new dictionary needs a new magic).
_ZDICT = (
    b'[["identity.create","identity.set","external_id.add","programme.add","identity.merge",'
    b'"card.issue","card.revoke","review.open","key.rotate","identity.snapshot","evict"],"card.status",'
    b'{"campaign_id":"","card_code":"","country_code":"SN","created_at":"2026-","date_of_birth":"19",'
    b'"external_ids":{"dhis2_uid":""},"first_name":"","gender":"F","instance_url":null,"keep_target":true,'
    b'"last_name":"","linked_at":"T","phone_number":"+2217","programme_count":1,"programme_type":"vaccination",'
    b'"reason":"","region_code":"DKR","source":"","status":"valid","system":"","target":"","token_hash":"",'
    b'"value":""}]'
)


def _compress(value: Any) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return packer.compress(canonical_json(value).encode()) + packer.flush()


def _decompress(body: bytes) -> Any:
    try:
        unpacker = zlib.decompressobj(15, _ZDICT)
        raw = unpacker.decompress(body, MAX_BODY)
        if unpacker.unconsumed_tail:
            raise BadEnvelope("the body is larger than a change set may be")
        if not unpacker.eof:
            raise BadEnvelope("the compressed body is truncated")
        return json.loads(raw)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEnvelope(f"the body does not decompress: {exc}") from None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope; ``verify`` must pass before anything in it is believed."""

    node_id: str
    key_id: str
    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str
    body: bytes
    header: dict[str, Any]
    signature: bytes
    raw: bytes = field(repr=False)

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def verify(self, key: VerifyKey) -> None:
        """Raise BadSignature unless ``key`` signed this envelope."""
        try:
            key.verify(self.raw[:-_SIG], self.signature)
        except (BadSignatureError, ValueError):
            raise BadSignature("the envelope's signature does not hold") from None


def _seal(header: dict[str, Any], rows: Any, key: SigningKey) -> bytes:
    head = canonical_json(header).encode()
    if len(head) > 0xFFFF:
        raise ValueError("envelope header too long")
    unsigned = _MAGIC + struct.pack(">H", len(head)) + head + _compress(rows)
    return unsigned + key.sign(unsigned).signature


def open_envelope(raw: bytes) -> Envelope:
    """Parse an envelope's framing and header (BadEnvelope when it is not one)."""
    if len(raw) < 6 + _SIG or raw[:4] != _MAGIC:
        raise BadEnvelope("not a change-set envelope")
    (length,) = struct.unpack(">H", raw[4:6])
    if 6 + length + _SIG > len(raw):
        raise BadEnvelope("the envelope is truncated")
    try:
        header = json.loads(raw[6 : 6 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadEnvelope("the envelope header is not JSON") from None
    if not isinstance(header, dict) or not header.keys() >= _HEADER_KEYS:
        raise BadEnvelope("the envelope header lacks " + ", ".join(sorted(_HEADER_KEYS - set(header or {}))))
    try:
        first, last = int(header["first_seq"]), int(header["last_seq"])
        node_id, key_id = str(header["node_id"]), str(header["key_id"])
        prev_hash, last_hash = str(header["prev_hash"]), str(header["last_hash"])
    except (TypeError, ValueError):
        raise BadEnvelope("the envelope header has a field of the wrong type") from None
    if first < 1 or last < first - 1:
        raise BadEnvelope("the envelope's sequence range is empty or reversed")
    return Envelope(
        node_id, key_id, first, last, prev_hash, last_hash,
        raw[6 + length : -_SIG], header, raw[-_SIG:], raw,
    )


# -- pushed changes: one node's chain ---------------------------------------------------


def _wire_payload(kind: str, mpi_id: str | None, payload: dict[str, Any]) -> Any:
    if (
        kind == "identity.create"
        and payload.get("mpi_id") == mpi_id
        and payload.get("updated_at") == payload.get("created_at")
        and payload.get("status") == "active"
        and "~" not in payload
    ):
        return {k: v for k, v in payload.items() if k not in ("mpi_id", "updated_at", "status")}
    return {**payload, "~": 1} if kind == "identity.create" else payload


def _payload_from_wire(kind: str, mpi_id: str | None, wire: Any) -> dict[str, Any]:
    if not isinstance(wire, dict):
        raise BadEnvelope("a change's payload is not an object")
    if kind != "identity.create":
        return wire
    if "~" in wire:
        return {k: v for k, v in wire.items() if k != "~"}
    return {**wire, "mpi_id": mpi_id, "updated_at": wire.get("created_at"), "status": "active"}


def seal_changes(
    changes: Sequence[Change],
    key: SigningKey,
    *,
    node_id: str,
    key_id: str,
    next_seq: int,
    prev_hash: str,
    **extra: Any,
) -> bytes:
    """A signed envelope of consecutive changes of one node (none: an empty, signed request)."""
    rows: list[Any] = []
    last_hlc = 0
    for c in changes:
        rows.append([c.hlc - last_hlc, c.kind, c.mpi_id, _wire_payload(c.kind, c.mpi_id, json.loads(c.payload))])
        last_hlc = c.hlc
    header = {
        "node_id": node_id,
        "key_id": key_id,
        "first_seq": changes[0].seq if changes else next_seq,
        "last_seq": changes[-1].seq if changes else next_seq - 1,
        "prev_hash": changes[0].prev_hash if changes else prev_hash,
        "last_hash": changes[-1].hash if changes else prev_hash,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return _seal(header, rows, key)


def decode_changes(env: Envelope) -> list[Change]:
    """The changes of a pushed envelope, their hashes recomputed; the chain must end at last_hash."""
    rows = _decompress(env.body)
    if not isinstance(rows, list) or len(rows) != env.count:
        raise BadEnvelope("the body does not hold last_seq - first_seq + 1 changes")
    out: list[Change] = []
    prev, hlc = env.prev_hash, 0
    try:
        for i, (dhlc, kind, mpi_id, wire) in enumerate(rows):
            hlc += int(dhlc)
            if kind not in KINDS:
                raise BadEnvelope(f"unknown change kind {kind!r}")
            if mpi_id is not None and not isinstance(mpi_id, str):
                raise BadEnvelope("a change's mpi_id is not a string")
            payload = canonical_json(_payload_from_wire(kind, mpi_id, wire))
            seq = env.first_seq + i
            digest = change_hash(prev, env.node_id, seq, hlc, kind, mpi_id, payload)
            out.append(Change(env.node_id, seq, hlc, env.key_id, kind, mpi_id, payload, prev, digest))
            prev = digest
    except (TypeError, ValueError) as exc:
        if isinstance(exc, BadEnvelope):
            raise
        raise BadEnvelope(f"a change row is malformed: {exc}") from None
    if prev != env.last_hash:
        raise BadEnvelope("the changes do not hash to the envelope's last_hash")
    return out


# -- what the hub sends down: positions in its feed -------------------------------------


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One thing a node must apply: a change (origin, seq, hlc...) or a bare card status."""

    pos: int
    origin: str | None
    seq: int | None
    hlc: int
    kind: str
    mpi_id: str | None
    payload: dict[str, Any]


def seal_feed(
    items: Sequence[FeedItem],
    key: SigningKey,
    *,
    hub_id: str,
    key_id: str,
    to: str,
    after: int,
    after_hash: str,
    upto: int,
    upto_hash: str,
    more: bool = False,
) -> bytes:
    """A signed envelope of feed positions (after, upto] for node ``to``; items are those that concern it."""
    rows: list[Any] = []
    last = after
    for item in items:
        rows.append(
            [item.pos - last, item.origin, item.seq, item.hlc, item.kind, item.mpi_id,
             _wire_payload(item.kind, item.mpi_id, item.payload)]
        )
        last = item.pos
    header = {
        "node_id": hub_id,
        "key_id": key_id,
        "first_seq": after + 1,
        "last_seq": upto,
        "prev_hash": after_hash,
        "last_hash": upto_hash,
        "to": to,
    }
    if more:
        header["more"] = True
    return _seal(header, rows, key)


def decode_feed(env: Envelope) -> list[FeedItem]:
    rows = _decompress(env.body)
    if not isinstance(rows, list):
        raise BadEnvelope("the body is not a list")
    out: list[FeedItem] = []
    pos = env.first_seq - 1
    try:
        for dpos, origin, seq, hlc, kind, mpi_id, wire in rows:
            pos += int(dpos)
            if not env.first_seq <= pos <= env.last_seq:
                raise BadEnvelope("a feed item lies outside the envelope's range")
            out.append(FeedItem(pos, origin, seq, int(hlc), str(kind), mpi_id, _payload_from_wire(kind, mpi_id, wire)))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, BadEnvelope):
            raise
        raise BadEnvelope(f"a feed row is malformed: {exc}") from None
    return out


# -- a node's own changes, sent back by the hub (a restored node catching up) ---------------


def seal_own(changes: Sequence[Change], key: SigningKey, *, hub_id: str, key_id: str, to: str, after: int,
             after_hash: str, more: bool = False) -> bytes:
    """A hub-signed envelope of node ``to``'s own changes (after, last]: its chain as the hub holds it.

    A row is ``[hlc - previous hlc, key_id, kind, mpi_id, payload]``; the node recomputes every
    hash from ``prev_hash`` and the chain must end at the signed ``last_hash``.
    """
    rows: list[Any] = []
    last_hlc = 0
    for c in changes:
        rows.append([c.hlc - last_hlc, c.key_id, c.kind, c.mpi_id, _wire_payload(c.kind, c.mpi_id, json.loads(c.payload))])
        last_hlc = c.hlc
    header = {
        "node_id": hub_id, "key_id": key_id, "first_seq": after + 1, "last_seq": after + len(changes),
        "prev_hash": after_hash, "last_hash": changes[-1].hash if changes else after_hash, "to": to, "own": True,
    }
    if more:
        header["more"] = True
    return _seal(header, rows, key)


def decode_own(env: Envelope, node_id: str) -> list[Change]:
    """The changes of node ``node_id`` in a hub's ``seal_own`` envelope (verify it first), hashes recomputed."""
    if not env.header.get("own") or env.header.get("to") != node_id:
        raise BadEnvelope("this envelope is not this node's own changes")
    rows = _decompress(env.body)
    if not isinstance(rows, list) or len(rows) != env.count:
        raise BadEnvelope("the body does not hold last_seq - first_seq + 1 changes")
    out: list[Change] = []
    prev, hlc = env.prev_hash, 0
    try:
        for i, (dhlc, kid, kind, mpi_id, wire) in enumerate(rows):
            hlc += int(dhlc)
            if kind not in KINDS or (mpi_id is not None and not isinstance(mpi_id, str)):
                raise BadEnvelope("a change row is malformed")
            payload = canonical_json(_payload_from_wire(kind, mpi_id, wire))
            seq = env.first_seq + i
            digest = change_hash(prev, node_id, seq, hlc, kind, mpi_id, payload)
            out.append(Change(node_id, seq, hlc, str(kid), kind, mpi_id, payload, prev, digest))
            prev = digest
    except (TypeError, ValueError) as exc:
        if isinstance(exc, BadEnvelope):
            raise
        raise BadEnvelope(f"a change row is malformed: {exc}") from None
    if prev != env.last_hash:
        raise BadEnvelope("the changes do not hash to the envelope's last_hash")
    return out


# -- acknowledgements ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    node_id: str
    seq: int
    hash: str


def seal_ack(ack: Ack, key: SigningKey) -> bytes:
    body = canonical_json([ack.node_id, ack.seq, ack.hash]).encode()
    unsigned = _ACK_MAGIC + body
    return unsigned + key.sign(unsigned).signature


def open_ack(raw: bytes, key: VerifyKey) -> Ack:
    """A verified acknowledgement (BadSignature if the hub did not sign it)."""
    if len(raw) < 4 + _SIG or raw[:4] != _ACK_MAGIC:
        raise BadEnvelope("not an acknowledgement")
    try:
        key.verify(raw[:-_SIG], raw[-_SIG:])
    except (BadSignatureError, ValueError):
        raise BadSignature("the acknowledgement's signature does not hold") from None
    try:
        node_id, seq, digest = json.loads(raw[4:-_SIG])
        return Ack(str(node_id), int(seq), str(digest))
    except (TypeError, ValueError):
        raise BadEnvelope("the acknowledgement is malformed") from None


# -- parts: replies and bundle files ---------------------------------------------------------


def join_parts(parts: Iterable[tuple[str, bytes]]) -> bytes:
    """Envelopes (``E``) and acknowledgements (``A``) in one byte string."""
    out = [_PARTS_MAGIC]
    for kind, data in parts:
        out.append(kind.encode()[:1] + struct.pack(">I", len(data)) + data)
    return b"".join(out)


def split_parts(raw: bytes) -> list[tuple[str, bytes]]:
    if raw[:4] != _PARTS_MAGIC:
        raise BadEnvelope("not a sync reply or bundle")
    out: list[tuple[str, bytes]] = []
    i = 4
    while i < len(raw):
        if i + 5 > len(raw):
            raise BadEnvelope("the bundle is truncated")
        kind = raw[i : i + 1].decode("latin-1")
        (length,) = struct.unpack(">I", raw[i + 1 : i + 5])
        if i + 5 + length > len(raw):
            raise BadEnvelope("the bundle is truncated")
        out.append((kind, raw[i + 5 : i + 5 + length]))
        i += 5 + length
    return out
