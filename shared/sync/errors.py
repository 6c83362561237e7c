"""What can go wrong when a change set is checked, and how each failure is answered.

    SyncError(message)                 a change set or enrolment that is refused
    ├── BadEnvelope        400  bad_envelope      not an envelope, truncated, inconsistent chain
    ├── BadSignature       401  bad_signature     the signature does not hold
    ├── UnknownKey         401  unknown_key       no such key, or the key of another node
    ├── RevokedKey         403  revoked_key       the key (or its node) was revoked
    ├── Quarantined        403  quarantined       the node forked its chain: an operator must look
    ├── EnrolmentRefused   403  enrolment_refused bad or used enrolment secret
    ├── ChainGap           409  chain_gap         the set does not continue the chain (expected_seq)
    ├── ChainFork          409  chain_fork        same sequence, another hash: the node is quarantined
    └── ClockSkew          422  clock_skew        stamped too far ahead of the receiver's clock

``STATUS`` is the one table from error class to (HTTP status, code); the hub's handlers and
both command lines read it, so a refusal looks the same over HTTP and on a USB stick.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "STATUS",
    "BadEnvelope",
    "BadSignature",
    "ChainFork",
    "ChainGap",
    "ClockSkew",
    "EnrolmentRefused",
    "Quarantined",
    "RevokedKey",
    "SyncError",
    "UnknownKey",
    "status_of",
]


class SyncError(Exception):
    """A refused change set; ``extra`` travels in the error body."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadEnvelope(SyncError):
    pass


class BadSignature(SyncError):
    pass


class UnknownKey(SyncError):
    pass


class RevokedKey(SyncError):
    pass


class Quarantined(SyncError):
    pass


class EnrolmentRefused(SyncError):
    pass


class ChainGap(SyncError):
    def __init__(self, expected_seq: int, message: str | None = None) -> None:
        super().__init__(message or f"the chain continues at sequence {expected_seq}", expected_seq=expected_seq)
        self.expected_seq = expected_seq


class ChainFork(SyncError):
    def __init__(self, seq: int, message: str | None = None) -> None:
        super().__init__(message or f"sequence {seq} exists with another hash: the chain forked", seq=seq)
        self.seq = seq


class ClockSkew(SyncError):
    pass


STATUS: dict[type[SyncError], tuple[int, str]] = {
    BadEnvelope: (400, "bad_envelope"),
    BadSignature: (401, "bad_signature"),
    UnknownKey: (401, "unknown_key"),
    RevokedKey: (403, "revoked_key"),
    Quarantined: (403, "quarantined"),
    EnrolmentRefused: (403, "enrolment_refused"),
    ChainGap: (409, "chain_gap"),
    ChainFork: (409, "chain_fork"),
    ClockSkew: (422, "clock_skew"),
}
_BY_CODE = {code: cls for cls, (_, code) in STATUS.items()}


def status_of(exc: SyncError) -> tuple[int, str]:
    """(HTTP status, code) of a refusal."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400, "sync_error"


def from_answer(code: str, message: str, extra: dict[str, Any]) -> SyncError:
    """The error a peer reported, rebuilt from its code (the node reads the hub's refusals)."""
    cls = _BY_CODE.get(code)
    if cls is ChainGap:
        return ChainGap(int(extra.get("expected_seq", 0)), message)
    if cls is ChainFork:
        return ChainFork(int(extra.get("seq", 0)), message)
    if cls is None:
        return SyncError(message, code=code)
    return cls(message)
