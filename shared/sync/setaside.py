"""Applying a pushed change set at the hub so that one bad change never blocks a node.

The set is applied in a SAVEPOINT; if anything in it fails (PostgreSQL refuses a NUL in
text, a payload this version does not understand...), the hub rolls back to the savepoint
and applies the set change by change, each in its own savepoint. A change that fails is
*set aside*: kept in the change log (the chain holds), recorded in ``sync_setaside`` with the
reason, sent to no node. The rest applies and the set is acknowledged.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..storage import schema as t
from ..storage.store import Tx
from .apply import Applier, NodeAuthority, Remote, Route
from .changelog import Change

__all__ = ["apply_or_set_aside"]

log = logging.getLogger("mpi.sync.hub")


class _Mark:
    """What a write transaction had gathered before a SAVEPOINT, to forget what a rolled-back one added."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.after_commit = len(tx.after_commit)
        self.changes = len(tx._changes)
        self.audit = len(tx._audit)
        self.state = (tx.seq, tx.last_hash, tx.counter)

    def reset(self) -> None:
        del self.tx.after_commit[self.after_commit :]
        del self.tx._changes[self.changes :]
        del self.tx._audit[self.audit :]
        self.tx.seq, self.tx.last_hash, self.tx.counter = self.state


def _transient(exc: BaseException) -> bool:
    """A failure of the database itself (connection lost, serialization, timeout), not of the change.

    Such a failure must fail the whole push (the node retries later), never set changes aside.
    """
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError):
        return True
    # A driver error raised unwrapped (COPY on the driver's own connection): judge by its PEP 249 class.
    return any(cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(exc).__mro__)


def _reason(exc: BaseException) -> str:
    """Why a change did not apply, in one line, without the SQL or its parameters (they may hold PII)."""
    inner = getattr(exc, "orig", None) or exc
    text = (str(inner).strip().splitlines() or [""])[0]
    return f"{type(inner).__name__}: {text}"[:300]


async def apply_or_set_aside(applier: Applier, tx: Tx, changes: list[Change],
                             authority: NodeAuthority | None = None) -> list[Route]:
    """Apply a set in a SAVEPOINT; if it fails, change by change, setting aside each one that fails.

    A change the hub cannot apply (PostgreSQL refuses a NUL in text, a payload this version
    does not understand...) must not block the node's sync for ever: it stays in the change
    log (the chain holds), is recorded in ``sync_setaside`` with the reason (``GET /sync/nodes``)
    and goes to no node; the rest of the set applies and the set is acknowledged. So is a
    change ``authority`` refuses (the node may not make it): its route's ``refused`` says why.
    """
    remotes = [Remote(c.node_id, c.seq, c.hlc, c.kind, c.mpi_id, json.loads(c.payload)) for c in changes]
    mark = _Mark(tx)
    granted = set(authority.granted) if authority is not None else set()
    try:
        async with tx.conn.begin_nested():
            routes = await applier.apply(tx, remotes, authority)
        await _refused(tx, changes, routes)
        return routes
    except Exception as exc:  # anything the database or the applier refused: find the change
        if _transient(exc):
            raise
        mark.reset()
        if authority is not None:
            authority.granted = granted
        log.warning("a change set from %s did not apply whole (%s): applying it change by change",
                    changes[0].node_id, _reason(exc))
    routes = []
    for change, remote in zip(changes, remotes, strict=True):
        mark = _Mark(tx)
        granted = set(authority.granted) if authority is not None else set()
        try:
            async with tx.conn.begin_nested():
                routes.extend(await applier.apply(tx, [remote], authority))
        except Exception as exc:
            if _transient(exc):
                raise
            mark.reset()
            if authority is not None:
                authority.granted = granted
            await _set_aside(tx, change, _reason(exc))
            routes.append(Route())
    await _refused(tx, changes, routes)
    return routes


async def _refused(tx: Tx, changes: list[Change], routes: list[Route]) -> None:
    for change, route in zip(changes, routes, strict=True):
        if route.refused is not None:
            await _set_aside(tx, change, route.refused)


async def _set_aside(tx: Tx, change: Change, reason: str) -> None:
    log.warning("set aside change %s/%s (%s): %s", change.node_id, change.seq, change.kind, reason)
    await tx.conn.execute(
        sa.insert(t.sync_setaside).values(
            node_id=change.node_id, seq=change.seq, kind=change.kind, mpi_id=change.mpi_id, reason=reason, at=tx.now,
        )
    )
    tx.audit("sync_set_aside", change.mpi_id, node_id=change.node_id, seq=change.seq, reason=reason)
