"""What can go wrong when a change set is checked or carried, and how each failure is answered.

    LinkDown                           the hub could not be reached, or the link was cut (503)
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

``STATUS`` is the one table from error class to (HTTP status, code). ``http_answer`` renders
any of these errors (the app's error middleware calls it: no handler translates them), and
``one_line`` words them for the command lines (``shared.cli.run``), so a refusal looks the
same over HTTP and on a USB stick. A failure of a node's sync round (a refusal the node
received from its hub, rebuilt by ``from_answer``, or a reply the node cannot accept) has
``upstream`` set: it is no fault of whoever asked the node to sync, so the node's API
answers it 502 ``sync_refused`` with the code as ``reason``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Behind",
    "STATUS",
    "LinkDown",
    "from_answer",
    "http_answer",
    "one_line",
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


class LinkDown(Exception):
    """The hub could not be reached, or the connection was cut: try again later."""


class SyncError(Exception):
    """A refused change set; ``extra`` travels in the error body."""

    #: True when the error arose in a node's round with its hub (the hub refused, or sent what cannot be used).
    upstream = False

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


class Behind(ChainFork):
    """The hub acknowledges changes of this node its database lacks: a copy older than what it pushed."""


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
    exc: SyncError
    if cls is ChainGap:
        exc = ChainGap(int(extra.get("expected_seq", 0)), message)
    elif cls is ChainFork:
        exc = ChainFork(int(extra.get("seq", 0)), message)
    elif cls is None:
        exc = SyncError(message, code=code)
    else:
        exc = cls(message)
    exc.upstream = True
    return exc


def http_answer(exc: SyncError | LinkDown) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body in the API's error shape) for a sync failure."""
    if isinstance(exc, LinkDown):
        return 503, {"status": "hub_unreachable", "error": f"the hub cannot be reached: {exc}"}
    status, code = status_of(exc)
    if exc.upstream:
        return 502, {"status": "sync_refused", "error": exc.message, "reason": code}
    extra = {k: v for k, v in exc.extra.items() if k not in ("status", "error")}
    return status, {"status": code, "error": exc.message, **extra}


def one_line(exc: SyncError | LinkDown) -> str:
    """A sync failure as the command lines print it."""
    if isinstance(exc, LinkDown):
        return f"sync failed: the hub cannot be reached: {exc}"
    code = status_of(exc)[1]
    return f"{'sync refused' if exc.upstream else 'refused'} ({code}): {exc.message}"
