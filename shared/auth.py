"""Bearer tokens and roles: registrar < supervisor < admin, and ``metrics`` beside them.

Tokens are made by the CLI, shown once, and stored as their SHA-256, with an optional
expiry. A request's token is looked up on each call, with a short cache so that a busy post
does not pay one query a request; a revoked token stops working within ``_CACHE_SECONDS``,
an expired one at once (401 ``token_expired``). When a token was last used is recorded in
the batches of the read audit (``Store.note_token_use``), never by a write of its own.
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

from .storage import schema as t
from .storage.store import Store, utc_now

__all__ = ["ROLES", "Auth", "Principal", "expiry"]

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
    def __init__(self, store: Store) -> None:
        self.store = store
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
        async with self.store.write("cli") as tx:
            result = await tx.conn.execute(
                sa.update(t.api_token)
                .where(t.api_token.c.name == name, t.api_token.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
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

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal (check ``expired()``), or None for an unknown or revoked token."""
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
        if principal is not None and not principal.expired():
            self.store.note_token_use(digest)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal
