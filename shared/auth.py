"""Bearer tokens and roles: registrar < supervisor < admin.

Tokens are made by the CLI, shown once, and stored as their SHA-256. A request's token is
looked up on each call, with a short cache so that a busy post does not pay one query a
request; a revoked token stops working within ``_CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .storage import schema as t
from .storage.store import Store, utc_now

__all__ = ["ROLES", "Auth", "Principal"]

ROLES = {"registrar": 1, "supervisor": 2, "admin": 3}
_CACHE_SECONDS = 5.0
_PREFIX = "mpi_"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auth:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create_token(self, role: str, name: str) -> str:
        """A new token for ``name`` with ``role``; only its hash is kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not name.strip():
            raise ValueError("a token needs a name")
        token = _PREFIX + secrets.token_urlsafe(32)
        async with self.store.write(f"cli:{name}") as tx:
            await tx.conn.execute(
                sa.insert(t.api_token).values(name=name, role=role, token_hash=_hash(token), created_at=tx.now)
            )
            tx.audit("token_create", None, name=name, role=role)
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

    async def authenticate(self, token: str) -> Principal | None:
        digest = _hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.api_token.c.name, t.api_token.c.role).where(
                        t.api_token.c.token_hash == digest, t.api_token.c.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = Principal(row.name, row.role) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal
