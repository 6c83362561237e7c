"""The Store: engines, the one-writer transaction, the change log and the audit log.

Every write runs in ``async with store.write(actor) as tx``: one database transaction,
serialized by one lock, begun with BEGIN IMMEDIATE on SQLite. The write and the changes it
appends to the log (``tx.change``) and its audit record (``tx.audit``) commit together or
not at all. The last sequence and hash of the change log and the ID counter are read from
the database inside that transaction, after it holds the write lock (BEGIN IMMEDIATE on
SQLite, ``SELECT ... FOR UPDATE`` of the counter row on PostgreSQL), so any number of
processes may write (a serving node and ``mpi-node import``, a hub and ``mpi-hub dedup
sweep``), one at a time. ``store.seq``, ``store.last_hash`` and ``store.counter`` are what
this process last saw, for display only.

Reads of personal data are audited too, but a read must not cost a disk flush: their
records wait in memory for at most ``audit_flush_seconds`` and are written in batches
(and at shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..ids import mint
from ..sync.changelog import GENESIS_HASH, canonical_json, change_hash
from ..sync.hlc import Hlc
from . import schema
from .dialects import Dialect
from .migrations import migrate

__all__ = ["NotInitialised", "Store", "Tx", "utc_now"]

log = logging.getLogger("mpi.store")

_COPY_OVER = 1000  # rows: more are logged with COPY (a bulk import's batches; not a sync push: COPY halved its apply rate)


def utc_now() -> str:
    """Now as the API writes timestamps: ``2026-05-15T09:00:00.123Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _last_change(conn: AsyncConnection, node_id: str) -> Any:
    """The newest change this node wrote (seq, hash, hlc), or None: where its chain goes on."""
    return (
        await conn.execute(
            sa.select(schema.change_log.c.seq, schema.change_log.c.hash, schema.change_log.c.hlc)
            .where(schema.change_log.c.node_id == node_id)
            .order_by(schema.change_log.c.seq.desc())
            .limit(1)
        )
    ).first()


class NotInitialised(RuntimeError):
    """The database has no node identity yet: run ``init`` first."""


class Tx:
    """One write transaction: the connection plus what the write appends to the logs."""

    def __init__(self, store: Store, conn: AsyncConnection, actor: str) -> None:
        self.conn = conn
        self.actor = actor
        self.now = utc_now()
        self._store = store
        self.seq = 0
        self.last_hash = GENESIS_HASH
        self.counter = 0
        self._counter_read = 0
        self._audit: list[dict[str, Any]] = []
        self._changes: list[dict[str, Any]] = []
        self.after_commit: list[Callable[[], None]] = []

    async def _load(self) -> None:
        """Read the writer's state under the write lock: another process may have written."""
        # Locking the counter row serializes writers on PostgreSQL; SQLite's BEGIN IMMEDIATE
        # holds the database's write lock already (and SQLAlchemy renders no FOR UPDATE there).
        counter = (
            await self.conn.execute(
                sa.select(schema.node_meta.c.value).where(schema.node_meta.c.key == "id_counter").with_for_update()
            )
        ).scalar()
        self.counter = self._counter_read = int(counter or 0)
        last = await _last_change(self.conn, self._store.node_id)
        if last is not None:
            self.seq, self.last_hash = int(last.seq), str(last.hash)
            self._store.hlc.observe(int(last.hlc))

    def insert_ignore(self, table: sa.Table) -> Any:
        return self._store.dialect.insert_ignore(table)

    async def bulk_insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Many rows at once, in this transaction (COPY on PostgreSQL)."""
        await self._store.dialect.bulk_insert(self.conn, table, rows)

    def change(self, kind: str, mpi_id: str | None, payload: dict[str, Any]) -> int:
        """Append one change to this node's hash-chained log; returns its HLC."""
        hlc = self._store.hlc.tick()
        self.seq += 1
        body = canonical_json(payload)
        digest = change_hash(self.last_hash, self._store.node_id, self.seq, hlc, kind, mpi_id, body)
        self._changes.append(
            {
                "node_id": self._store.node_id,
                "seq": self.seq,
                "hlc": hlc,
                "key_id": self._store.key_id,
                "kind": kind,
                "mpi_id": mpi_id,
                "payload": body,
                "prev_hash": self.last_hash,
                "hash": digest,
            }
        )
        self.last_hash = digest
        return hlc

    def audit(self, action: str, mpi_id: str | None = None, **detail: Any) -> None:
        self._audit.append(
            {"at": self.now, "actor": self.actor, "action": action, "mpi_id": mpi_id, "detail": json.dumps(detail)}
        )

    def mint_id(self, country: str, region: str) -> str:
        """A new MPI ID, unique by construction (node number, counter)."""
        mpi_id = mint(country, region, int(self.now[2:4]), self._store.node_number, self.counter)
        self.counter += 1
        return mpi_id

    async def insert_returning_pks(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
        """Insert rows of a table with an autoincrement ``pk``; their pks in order (COPY when many)."""
        return await self._store.dialect.insert_returning_pks(self.conn, table, rows)

    async def insert_rows(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Rows of any number: a few as one INSERT, many (a bulk import's thousands) by COPY."""
        if len(rows) > _COPY_OVER:
            await self.bulk_insert(table, rows)
        elif rows:
            await self.conn.execute(sa.insert(table), rows)

    async def _flush(self) -> None:
        done = 0
        while done < len(self._changes):
            # A hook may append changes of its own (the hub's follow-ups): they are logged too.
            batch = self._changes[done:]
            done = len(self._changes)
            await self.insert_rows(schema.change_log, batch)
            for hook in self._store.change_hooks:
                await hook(self, batch)
        if self._audit:
            await self.insert_rows(schema.audit_log, self._audit)
        if self.counter != self._counter_read:
            await self.conn.execute(
                sa.update(schema.node_meta).where(schema.node_meta.c.key == "id_counter").values(value=str(self.counter))
            )


class Store:
    """The database of one node or of the hub."""

    def __init__(self, dialect: Dialect, *, audit_flush_seconds: float = 0.25) -> None:
        self.dialect = dialect
        self.writer: AsyncEngine
        self.reader: AsyncEngine
        self._lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._audit_flush_seconds = audit_flush_seconds
        self._read_audit: list[dict[str, Any]] = []
        self._token_uses: dict[str, str] = {}
        self._audit_task: asyncio.Task[None] | None = None
        self.meta: dict[str, str] = {}
        self.node_id = ""
        self.key_id = ""
        self.node_number = 0
        self.seq = 0
        self.last_hash = GENESIS_HASH
        self.counter = 0
        self.hlc = Hlc()
        # Called inside every write that appends changes, after they are inserted: the hub
        # adds them to the feed the nodes pull from.
        self.change_hooks: list[Callable[[Tx, list[dict[str, Any]]], Awaitable[None]]] = []

    # -- life cycle -------------------------------------------------------------------

    async def connect(self) -> None:
        self.writer, self.reader = self.dialect.create_engines()

    async def migrate(self) -> list[str]:
        return await migrate(self.writer)

    async def open(self) -> None:
        """Connect, bring the schema up to date and load the writer's state."""
        await self.connect()
        await self.migrate()
        await self.load_state()
        self._audit_task = asyncio.create_task(self._audit_loop())

    async def close(self) -> None:
        if self._audit_task is not None:
            self._audit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._audit_task
            self._audit_task = None
        await self.flush_read_audit()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    async def load_state(self) -> None:
        async with self.reader.connect() as conn:
            rows = await conn.execute(sa.select(schema.node_meta.c.key, schema.node_meta.c.value))
            self.meta = {k: v for k, v in rows}
            if "node_id" not in self.meta:
                raise NotInitialised("this database has not been initialised: run init first")
            self.node_id = self.meta["node_id"]
            self.key_id = self.meta.get("key_id", "")
            self.node_number = int(self.meta.get("node_number", "0"))
            self.counter = int(self.meta.get("id_counter", "0"))
            last = await _last_change(conn, self.node_id)
            self.seq, self.last_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
            max_hlc = (await conn.execute(sa.select(sa.func.max(schema.change_log.c.hlc)))).scalar()
            self.hlc = Hlc(int(max_hlc or 0))

    async def refresh(self) -> None:
        """Re-read the last sequence, hash and ID counter: another process may have written.

        Writes never need this (they read them under the write lock); code that reports or
        compares ``store.seq`` outside a write (sync status, acknowledgements) does.
        """
        async with self.reader.connect() as conn:
            counter = (
                await conn.execute(sa.select(schema.node_meta.c.value).where(schema.node_meta.c.key == "id_counter"))
            ).scalar()
            last = await _last_change(conn, self.node_id)
        self.counter = int(counter or 0)
        if last is not None:
            self.seq, self.last_hash = int(last.seq), str(last.hash)
            self.hlc.observe(int(last.hlc))

    async def initialise(self, meta: dict[str, str]) -> None:
        """Record the node's identity (node id, country, region, key id...) once, at init."""
        async with self.writer.begin() as conn:
            existing = (await conn.execute(sa.select(schema.node_meta.c.key))).scalars().all()
            if "node_id" in existing:
                raise ValueError("this database is initialised already")
            rows = [{"key": k, "value": v} for k, v in {**meta, "id_counter": "0"}.items()]
            await conn.execute(sa.insert(schema.node_meta), rows)

    async def set_meta(self, key: str, value: str) -> None:
        async with self._lock, self.writer.begin() as conn:
            await conn.execute(sa.delete(schema.node_meta).where(schema.node_meta.c.key == key))
            await conn.execute(sa.insert(schema.node_meta).values(key=key, value=value))
        self.meta[key] = value

    # -- transactions -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def write(self, actor: str) -> AsyncIterator[Tx]:
        """One serialized write transaction with its change-log and audit rows."""
        async with self._lock:
            async with self.writer.begin() as conn:
                tx = Tx(self, conn, actor)
                await tx._load()
                yield tx
                await tx._flush()
            # Committed: only now does the in-memory state move on.
            self.seq, self.last_hash, self.counter = tx.seq, tx.last_hash, tx.counter
            for callback in tx.after_commit:
                try:
                    callback()
                except Exception:  # the write is committed: a stale in-memory cache must not fail it
                    log.exception("after-commit callback failed")

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    # -- audit of reads ---------------------------------------------------------------

    def audit_read(self, actor: str, action: str, mpi_id: str | None = None, **detail: Any) -> None:
        self._read_audit.append(
            {"at": utc_now(), "actor": actor, "action": action, "mpi_id": mpi_id, "detail": json.dumps(detail)}
        )

    def note_token_use(self, token_hash: str) -> None:
        """Record that a token was used now; written with the next batch of read audit."""
        self._token_uses[token_hash] = utc_now()

    async def flush_read_audit(self) -> None:
        """Write the waiting read audit; returns once all that was waiting when called is written."""
        # One flush at a time: a caller that finds the list empty because the periodic flush
        # took it must still wait until that batch is committed (GET /audit reads it next).
        async with self._flush_lock:
            await self._flush_read_audit()

    async def _flush_read_audit(self) -> None:
        if not self._read_audit and not self._token_uses:
            return
        batch, self._read_audit = self._read_audit, []
        uses, self._token_uses = self._token_uses, {}
        try:
            async with self._lock, self.writer.begin() as conn:
                if batch:
                    await conn.execute(sa.insert(schema.audit_log), batch)
                if uses:
                    await conn.execute(
                        sa.update(schema.api_token)
                        .where(schema.api_token.c.token_hash == sa.bindparam("h"))
                        .values(last_used_at=sa.bindparam("at")),
                        [{"h": h, "at": at} for h, at in uses.items()],
                    )
        except Exception:
            self._read_audit[:0] = batch
            self._token_uses = {**uses, **self._token_uses}
            raise

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._audit_flush_seconds)
            try:
                # Shielded: close() cancels this loop, and a cancel that lands inside the
                # flush's BEGIN IMMEDIATE left the SQLite connection holding the write lock
                # (close's own flush then failed "database is locked"). The flush runs to its
                # end; close() waits for it on the flush lock.
                await asyncio.shield(self.flush_read_audit())
            except Exception:  # a full disk must not kill the server; the next round retries
                log.exception("could not write the audit records of reads")
