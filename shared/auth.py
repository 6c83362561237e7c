"""Bearer tokens, roles (registrar < supervisor < admin, and ``metrics`` beside them) and console
sessions: one way in.

Tokens are made by the CLI, shown once, and stored as their SHA-256, with an optional
expiry. ``Auth.authenticate`` is the one check of a token, for the API's bearer header and
for the console's sign-in alike: an address past its failed-authentication limit is refused
(429) before its token is even looked at; an unknown or revoked token is 401, an expired one
401 ``token_expired``, each counted as a failure. A token is looked up with a short cache so
that a busy post does not pay one query a request; a revoked token stops working within
``_CACHE_SECONDS``, an expired one at once. When a token was last used is recorded in the
batches of the read audit (``Store.note_token_use``), never by a write of its own.

A console session is a row of ``console_session`` keyed by the SHA-256 of a random id that
only the browser's cookie holds (``open_session``). Each request reads it with its token
(``session``, no cache): a session idle too long, past its maximum lifetime, signed out, or
whose token was revoked or expired is over at once. Nothing stored opens a session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .errors import TooManyRequests, Unauthorized
from .ratelimit import RateLimiter
from .storage import schema as t
from .storage.store import Store, utc_now

__all__ = ["ROLES", "Auth", "Principal", "expiry", "session_digest"]

# The one role table. A ranked role may do what the roles ranked below it may; a role ranked 0
# stands aside: only it and admin may do its routes, and it may do nothing else (a
# monitoring system's token scrapes GET /metrics and reads no person).
ROLES = {"metrics": 0, "registrar": 1, "supervisor": 2, "admin": 3}
_CACHE_SECONDS = 5.0
_PREFIX = "mpi_"
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    expires_at: str | None = None

    def may(self, role: str) -> bool:
        if ROLES[role] == 0 or ROLES[self.role] == 0:
            return self.role in (role, "admin")
        return ROLES[self.role] >= ROLES[role]

    def expired(self, now: str | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utc_now())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_digest(sid: str) -> str:
    """What the database keeps of a console session id: its SHA-256 (never the id)."""
    return hashlib.sha256(b"mpi-console-session\x00" + sid.encode()).hexdigest()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expiry(text: str, now: datetime | None = None) -> str:
    """When a token given ``--expires TEXT`` expires: a duration (``90d``, ``12h``, ``30m``,
    ``2w``) from now, or a date (``2027-01-31``: its start, UTC) or a time with a zone."""
    now = now or datetime.now(UTC)
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        amount, unit = int(duration.group(1)), duration.group(2)
        if amount == 0:
            raise ValueError("--expires must be a positive duration")
        return _stamp(now + timedelta(**{_UNITS[unit]: amount}))
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--expires {text!r}: give a duration (90d, 12h, 30m, 45s, 2w) or a date (2027-01-31)") from None
    if moment.tzinfo is None:
        if len(text.strip()) > 10:
            raise ValueError(f"--expires {text!r}: a time needs a zone, e.g. 2027-01-31T12:00:00Z")
        moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise ValueError(f"--expires {text!r} is in the past")
    return _stamp(moment)


class Auth:
    def __init__(self, store: Store, failures: RateLimiter | None = None) -> None:
        self.store = store
        self.failures = failures or RateLimiter(0)
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create_token(self, role: str, name: str, expires_at: str | None = None) -> str:
        """A new token for ``name`` with ``role`` (expiring at ``expires_at``); only its hash is kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not name.strip():
            raise ValueError("a token needs a name")
        token = _PREFIX + secrets.token_urlsafe(32)
        async with self.store.write(f"cli:{name}") as tx:
            await tx.conn.execute(
                sa.insert(t.api_token).values(
                    name=name, role=role, token_hash=_hash(token), created_at=tx.now, expires_at=expires_at
                )
            )
            tx.audit("token_create", None, name=name, role=role, expires_at=expires_at)
        return token

    async def revoke_token(self, name: str) -> int:
        """Revoke ``name``'s tokens; their console sessions end in the same transaction."""
        async with self.store.write("cli") as tx:
            result = await tx.conn.execute(
                sa.update(t.api_token)
                .where(t.api_token.c.name == name, t.api_token.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
            await tx.conn.execute(
                sa.delete(t.console_session).where(
                    t.console_session.c.token_hash.in_(
                        sa.select(t.api_token.c.token_hash).where(t.api_token.c.name == name)
                    )
                )
            )
            tx.audit("token_revoke", None, name=name)
        self._cache.clear()
        return int(result.rowcount)

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Every token's name, role, dates and state; never the token nor its hash."""
        now = utc_now()
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(t.api_token).order_by(t.api_token.c.pk))).all()
        out = []
        for r in rows:
            state = "revoked" if r.revoked_at else "expired" if r.expires_at and r.expires_at <= now else "active"
            out.append(
                {"name": r.name, "role": r.role, "state": state, "created_at": r.created_at,
                 "last_used_at": r.last_used_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at}
            )
        return out

    def refuse(self, client: str, message: str, code: str = "unauthorized") -> Unauthorized:
        """Count a failed authentication from ``client``; the error to raise."""
        self.failures.spend(client)
        return Unauthorized(message, code=code)

    async def authenticate(self, token: str, client: str = "unknown") -> Principal:
        """The principal of a valid token, the one check of the API and the console.

        Raises TooManyRequests when ``client`` failed too often (before the token is looked
        at: otherwise a guess that works would still stand out from the refused ones), and
        Unauthorized for a missing, unknown, revoked (``unauthorized``) or expired
        (``token_expired``) token, each counted against ``client``.
        """
        wait = self.failures.retry_after(client)
        if wait:
            raise TooManyRequests(f"too many failed authentications from this address: retry in {wait} s",
                                  retry_after=wait)
        if not token:
            raise self.refuse(client, "this endpoint needs an Authorization: Bearer <token> header")
        principal = await self._lookup(token)
        if principal is None:
            raise self.refuse(client, "unknown or revoked token")
        if principal.expired():
            raise self.refuse(client, f"this token expired at {principal.expires_at}", "token_expired")
        self.store.note_token_use(_hash(token))
        return principal

    async def _lookup(self, token: str) -> Principal | None:
        """The token's principal (expired or not), or None for an unknown or revoked token."""
        digest = _hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.api_token.c.name, t.api_token.c.role, t.api_token.c.expires_at).where(
                        t.api_token.c.token_hash == digest, t.api_token.c.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = Principal(row.name, row.role, row.expires_at) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal

    # -- console sessions ----------------------------------------------------------------------

    async def open_session(self, token: str, principal: Principal, lifetime_seconds: float) -> str:
        """A new console session for an authenticated token; returns its id (for the cookie only).

        Sessions past their end are cleared in the same transaction.
        """
        sid = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        s = t.console_session
        async with self.store.write(f"{principal.role}:{principal.name}") as tx:
            await tx.conn.execute(sa.delete(s).where(s.c.expires_at <= tx.now))
            await tx.conn.execute(
                sa.insert(s).values(sid_hash=session_digest(sid), token_hash=_hash(token), created_at=tx.now,
                                    seen_at=tx.now, expires_at=_stamp(now + timedelta(seconds=lifetime_seconds)))
            )
            tx.audit("console_sign_in", None, name=principal.name, role=principal.role)
        return sid

    async def session(self, sid: str, idle_seconds: float) -> tuple[Principal | None, str | None]:
        """(principal, None) for a live session; else (None, why it is over).

        Why: ``"none"`` (no such session: a visitor, signed out, or revoked), ``"idle"``,
        ``"lifetime"``, ``"token"`` (its token was revoked or expired). An ended session's row
        is deleted. A live session's ``seen_at`` moves on at most once a minute.
        """
        s, a = t.console_session, t.api_token
        digest = session_digest(sid)
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(s.c.seen_at, s.c.expires_at, a.c.name, a.c.role, a.c.revoked_at,
                              a.c.expires_at.label("token_expires_at"))
                    .select_from(s.outerjoin(a, a.c.token_hash == s.c.token_hash))
                    .where(s.c.sid_hash == digest)
                )
            ).first()
        if row is None:
            return None, "none"
        now = datetime.now(UTC)
        stamp = _stamp(now)
        why = None
        if row.name is None or row.revoked_at is not None or (
            row.token_expires_at is not None and row.token_expires_at <= stamp
        ):
            why = "token"
        elif row.expires_at <= stamp:
            why = "lifetime"
        elif row.seen_at <= _stamp(now - timedelta(seconds=idle_seconds)):
            why = "idle"
        if why is not None:
            await self.end_session(sid)
            return None, why
        if row.seen_at <= _stamp(now - timedelta(seconds=min(60.0, idle_seconds / 2))):
            async with self.store.write("console") as tx:
                await tx.conn.execute(sa.update(s).where(s.c.sid_hash == digest).values(seen_at=tx.now))
        return Principal(row.name, row.role, row.token_expires_at), None

    async def end_session(self, sid: str, principal: Principal | None = None) -> None:
        """Sign out: the session's row goes, so its cookie, or any copy of it, opens nothing."""
        actor = f"{principal.role}:{principal.name}" if principal else "console"
        async with self.store.write(actor) as tx:
            await tx.conn.execute(sa.delete(t.console_session).where(t.console_session.c.sid_hash == session_digest(sid)))
            if principal is not None:
                tx.audit("console_sign_out", None, name=principal.name)
