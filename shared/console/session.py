"""Console sessions: a signed cookie, its idle expiry, and the checks against cross-site forms.

The cookie holds ``{sid, seen}`` for a visitor and, once signed in, the principal's name and
role and the SHA-256 of the token used (never the token), so a revoked token ends the
session at the next request. It is signed with HMAC-SHA256; ``seen`` moves on with every
request and a session idle for longer than ``MPI_CONSOLE_IDLE_MINUTES`` is over.

Every form that changes state carries a CSRF token derived from the session id with the same
key, so it is bound to the session (a new one at sign-in); the request's Origin, when the
browser sends one, must be this server's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace

__all__ = ["COOKIE", "LANG_COOKIE", "Session", "csrf_token", "new_session", "origin_allowed", "read", "seal"]

COOKIE = "mpi_console"
LANG_COOKIE = "mpi_console_lang"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    seen: float
    name: str | None = None
    role: str | None = None
    token_hash: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.name is not None

    def touched(self, now: float) -> Session:
        return replace(self, seen=now)


def new_session(now: float | None = None, *, name: str | None = None, role: str | None = None,
                token_hash: str | None = None) -> Session:
    """A fresh session id (a new one at every sign-in: a planted cookie is worth nothing)."""
    return Session(secrets.token_urlsafe(18), time.time() if now is None else now, name, role, token_hash)


def _sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def seal(key: bytes, session: Session) -> str:
    """The cookie value: base64url(JSON) '.' HMAC."""
    payload = {"sid": session.sid, "seen": int(session.seen)}
    if session.signed_in:
        payload.update(name=session.name, role=session.role, th=session.token_hash)
    data = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
    return f"{data.decode()}.{_sign(key, data)}"


def read(key: bytes, value: str | None, idle_seconds: float, now: float | None = None) -> tuple[Session | None, bool]:
    """(session, expired): None for a missing or forged cookie; expired when it was idle too long."""
    if not value or "." not in value or len(value) > 2000:
        return None, False
    data, _, signature = value.rpartition(".")
    if not hmac.compare_digest(_sign(key, data.encode()), signature):
        return None, False
    try:
        payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        session = Session(str(payload["sid"]), float(payload["seen"]), payload.get("name"), payload.get("role"),
                          payload.get("th"))
    except (ValueError, KeyError, TypeError):
        return None, False
    now = time.time() if now is None else now
    if now - session.seen > idle_seconds:
        return None, True
    return session, False


def csrf_token(key: bytes, session: Session) -> str:
    """The token every state-changing form of this session carries."""
    return _sign(key, f"csrf:{session.sid}".encode())[:40]


def origin_allowed(origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    """Whether a POST may come from where the browser says it comes from."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True  # an old browser or a script: the CSRF token alone decides
    return origin == own_origin
