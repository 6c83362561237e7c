"""Console sessions as the browser sees them: a cookie holding a random id, and CSRF checks.

The cookie holds only a random session id. Signed in, the id names a row of
``console_session`` kept by ``Auth`` (which stores only the id's SHA-256, so no copy of the
database opens a session, and signing out deletes the row, so no copy of the cookie outlives
it). A visitor's id is in no table: it only binds the sign-in form's CSRF token. No key signs
anything, so there is no key to keep.

Every form that changes state carries a CSRF token derived from the session id (a digest
under its own label, so neither the token shown in a page nor the digest stored gives the
id); a new id at sign-in gives a new token. The request's Origin, when the browser sends one,
must be this server's own.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from ..auth import Principal

__all__ = ["COOKIE", "LANG_COOKIE", "Session", "csrf_token", "new_session", "origin_allowed", "session_id"]

COOKIE = "mpi_console"
LANG_COOKIE = "mpi_console_lang"
_SID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class Session:
    """This request's session id, and its principal once signed in."""

    sid: str
    principal: Principal | None = None

    @property
    def signed_in(self) -> bool:
        return self.principal is not None


def new_session(sid: str | None = None, principal: Principal | None = None) -> Session:
    """A session with a fresh random id (a new one at every sign-in: a planted cookie is worth nothing)."""
    return Session(sid or secrets.token_urlsafe(32), principal)


def session_id(value: str | None) -> str | None:
    """The session id a cookie holds, or None for a missing or malformed one."""
    return value if value is not None and _SID.fullmatch(value) else None


def csrf_token(session: Session) -> str:
    """The token every state-changing form of this session carries."""
    return hashlib.sha256(b"mpi-console-csrf\x00" + session.sid.encode()).hexdigest()[:40]


def origin_allowed(origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    """Whether a POST may come from where the browser says it comes from."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True  # an old browser or a script: the CSRF token alone decides
    return origin == own_origin
