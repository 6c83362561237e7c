"""How change sets travel: one ``Link`` interface, and the bundle file that a USB stick carries.

    Link                 what a sync round talks to
    ├── HttpLink         node/sync_client.py: POST /sync/push, replies at once
    └── BundleLink       here: every envelope of the round into one bundle file, replies later

A round (``NodeSync.round``) is the same code over both: it registers the node's key if the
hub does not have it, then pushes change sets. Over HTTP each push answers at once (an
acknowledgement and what to pull); into a file the envelopes are gathered and the answer
comes back as the hub's bundle, which ``NodeSync.import_bundle`` applies with the code that
applies an HTTP reply. At the hub, ``HubSync.import_bundle`` hands each envelope to
``HubSync.receive``, the code behind ``POST /sync/push``.

A bundle file is ``parts`` (``changeset.join_parts``) framed by a header and a signed end
marker, so that nothing applies from a file that is cut, padded or damaged::

    H  {"mpi_bundle": 1, "from", "to", "key_id", "parts": N}     what to expect
    R | E | A ...                                               N parts: registration, envelopes, acks
    Z  {"parts": N, "digests": [sha256 of H and each part]} + Ed25519 signature

``open_bundle`` checks the framing, the count and every part's digest before anything is
applied, and says what is wrong ("truncated: 2 of 4 parts", "part 3 of 4 (envelope) is
corrupted"); ``Bundle.verify`` checks the end marker's signature.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .changelog import canonical_json
from .changeset import join_parts
from .errors import BadEnvelope, BadSignature, LinkDown

__all__ = ["Bundle", "BundleLink", "Link", "LinkDown", "open_bundle", "seal_bundle"]

_PARTS_MAGIC = b"MPP1"
_SIG = 64
_NAMES = {"E": "envelope", "A": "acknowledgement", "R": "registration"}


class Link(Protocol):
    """Where a node's round sends its change sets."""

    #: True when ``push`` answers with the hub's reply (HTTP); False when the reply comes later (a file).
    immediate: bool

    async def register(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Present the node's key (signed, MACed with the enrolment secret); None: the hub answers later."""
        ...

    async def push(self, envelope: bytes) -> bytes:
        """Send a change set (possibly empty); the reply is ``parts`` (acknowledgement, feed), or b""."""
        ...


# -- bundle files ------------------------------------------------------------------------------


def _digest(kind: str, data: bytes) -> str:
    return hashlib.sha256(kind.encode() + data).hexdigest()


def seal_bundle(parts: list[tuple[str, bytes]], key: SigningKey, *, sender: str, to: str, key_id: str) -> bytes:
    """A bundle file of ``parts``, with its header and an end marker signed by ``key``."""
    header = canonical_json({"mpi_bundle": 1, "from": sender, "to": to, "key_id": key_id, "parts": len(parts)})
    framed = [("H", header.encode()), *parts]
    marker = canonical_json({"parts": len(parts), "digests": [_digest(k, d) for k, d in framed]}).encode()
    return join_parts([*framed, ("Z", marker + key.sign(marker).signature)])


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle whose framing, part count and digests hold; ``verify`` before believing it."""

    header: dict[str, Any]
    parts: list[tuple[str, bytes]]
    _marker: bytes
    _signature: bytes

    @property
    def key_id(self) -> str:
        return str(self.header.get("key_id", ""))

    @property
    def sender(self) -> str:
        return str(self.header.get("from", ""))

    def verify(self, key: VerifyKey) -> None:
        """Raise BadSignature unless ``key`` signed the end marker (and so every part)."""
        try:
            key.verify(self._marker, self._signature)
        except (BadSignatureError, ValueError):
            raise BadSignature("the bundle's end marker is not signed by the key it names") from None

    def envelopes(self) -> int:
        return sum(1 for kind, _ in self.parts if kind == "E")


def _frames(raw: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """The parts that are whole, and whether the last one was cut short."""
    out: list[tuple[str, bytes]] = []
    i = 4
    while i < len(raw):
        if i + 5 > len(raw):
            return out, True
        kind = raw[i : i + 1].decode("latin-1")
        (length,) = struct.unpack(">I", raw[i + 1 : i + 5])
        if i + 5 + length > len(raw):
            return out, True
        out.append((kind, raw[i + 5 : i + 5 + length]))
        i += 5 + length
    return out, False


def open_bundle(raw: bytes) -> Bundle:
    """Check a bundle file's framing, count and digests (BadEnvelope saying what is wrong)."""
    if raw[:4] != _PARTS_MAGIC:
        raise BadEnvelope("not a bundle file")
    frames, cut = _frames(raw)
    if not frames or frames[0][0] != "H":
        raise BadEnvelope("not a bundle file: it has no header (made by an older version?)")
    try:
        header = json.loads(frames[0][1])
        expected = int(header["parts"])
        if header.get("mpi_bundle") != 1:
            raise ValueError("unknown bundle version")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadEnvelope("the bundle's header is corrupted") from None
    body = frames[1:]
    if cut or not body or body[-1][0] != "Z":
        whole = len([f for f in body if f[0] != "Z"])
        raise BadEnvelope(
            f"the bundle is truncated: {whole} of {expected} part(s) are whole and the end marker is missing"
            + (f"; part {whole + 1} is cut short" if cut else "")
        )
    parts, (_, end) = body[:-1], body[-1]
    if len(end) < _SIG:
        raise BadEnvelope("the bundle's end marker is corrupted")
    marker, signature = end[:-_SIG], end[-_SIG:]
    try:
        sealed = json.loads(marker)
        digests = [str(d) for d in sealed["digests"]]
        if int(sealed["parts"]) != expected:
            raise ValueError("part counts differ")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadEnvelope("the bundle's end marker is corrupted") from None
    if len(parts) != expected or len(digests) != expected + 1:
        raise BadEnvelope(f"the bundle holds {len(parts)} part(s) where its header announces {expected}")
    if _digest("H", frames[0][1]) != digests[0]:
        raise BadEnvelope("the bundle's header is corrupted")
    for n, (kind, data) in enumerate(parts, 1):
        if kind not in _NAMES:
            raise BadEnvelope(f"part {n} of {expected} is of an unknown kind {kind!r}: corrupted")
        if _digest(kind, data) != digests[n]:
            raise BadEnvelope(f"part {n} of {expected} ({_NAMES[kind]}) is corrupted: it does not match the end marker")
    return Bundle(header, parts, marker, signature)


class BundleLink:
    """A round into a file: the registration and every change set, sealed by ``close``."""

    immediate = False

    def __init__(self) -> None:
        self.parts: list[tuple[str, bytes]] = []

    async def register(self, request: dict[str, Any]) -> dict[str, Any] | None:
        self.parts.append(("R", json.dumps(request).encode()))
        return None

    async def push(self, envelope: bytes) -> bytes:
        self.parts.append(("E", envelope))
        return b""

    def seal(self, key: SigningKey, *, sender: str, to: str, key_id: str) -> bytes:
        """The bundle file's bytes."""
        return seal_bundle(self.parts, key, sender=sender, to=to, key_id=key_id)
