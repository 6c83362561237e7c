"""Catching up after a restore: the hub's chain of this node's own changes becomes this node's.

``NodeSync._catch_up`` asks the hub where this node's chain stands and gets back, signed by the
hub, this node's changes after its acknowledged sequence as the hub holds them. ``take_chain``
then keeps those the local log has too (same hash); from the first that differs, or that the
local log lacks, the hub's chain is this node's: its changes enter the change log as
acknowledged and are applied through the feed, in the feed's order (``sync_own_range``); the
local changes from there on, written after the restore and never pushed, are renumbered after
the hub's head and re-chained (the envelope that pushes them is signed then). The ID counter
moves past every ID of this node number in the change log (``mpi-node restore`` moved it by a
margin already, for IDs the lost copy minted and never pushed).
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from ..ids import IdError
from ..ids import parse as parse_id
from ..storage import schema as t
from ..storage.store import Store, Tx
from .changelog import GENESIS_HASH, Change, change_hash
from .meta import _ACKED, _ACKED_HASH, _OWN, CAUGHT_UP, RESTORED, put_meta

__all__ = ["take_chain"]

log = logging.getLogger("mpi.sync.node")


async def take_chain(store: Store, start: int, head: tuple[int, str], theirs: list[Change]) -> str:
    """Make the hub's chain of this node's own changes (``theirs``, after ``start`` up to ``head``) this node's."""
    me = store.node_id
    hub_seq, hub_hash = head
    by_seq = {c.seq: c for c in theirs}
    async with store.write("sync") as tx:
        acked = (await tx.conn.execute(sa.select(t.node_meta.c.value).where(t.node_meta.c.key == _ACKED))).scalar()
        if int(acked or 0) != start:
            # Another process (the service, beside mpi-node sync) caught up in between: its answer stands.
            return "caught up with the hub already (by another process)"
        rows = (
            await tx.conn.execute(
                sa.select(t.change_log).where(t.change_log.c.node_id == me, t.change_log.c.seq > start)
                .order_by(t.change_log.c.seq)
            )
        ).all()
        common = start
        for r in rows:
            held = by_seq.get(r.seq)
            if held is None or held.hash != r.hash:
                break
            common = r.seq
        local_after = [r for r in rows if r.seq > common]
        resequenced = 0
        if common < hub_seq:
            # The hub's (common, head] are this node's; its own from common on were never pushed.
            await tx.conn.execute(
                sa.delete(t.change_log).where(t.change_log.c.node_id == me, t.change_log.c.seq > common)
            )
            out = [
                {"node_id": me, "seq": c.seq, "hlc": c.hlc, "key_id": c.key_id, "kind": c.kind, "mpi_id": c.mpi_id,
                 "payload": c.payload, "prev_hash": c.prev_hash, "hash": c.hash}
                for c in theirs if c.seq > common
            ]
            prev, seq = hub_hash, hub_seq
            for r in local_after:
                seq += 1
                digest = change_hash(prev, me, seq, r.hlc, r.kind, r.mpi_id, r.payload)
                out.append({"node_id": me, "seq": seq, "hlc": r.hlc, "key_id": r.key_id, "kind": r.kind,
                            "mpi_id": r.mpi_id, "payload": r.payload, "prev_hash": prev, "hash": digest})
                prev = digest
            resequenced = len(local_after)
            if out:
                await tx.conn.execute(sa.insert(t.change_log), out)
        # tx.seq/last_hash were read before: make the commit leave the store at the new head.
        last = (
            await tx.conn.execute(
                sa.select(t.change_log.c.seq, t.change_log.c.hash).where(t.change_log.c.node_id == me)
                .order_by(t.change_log.c.seq.desc()).limit(1)
            )
        ).first()
        tx.seq, tx.last_hash = (int(last.seq), str(last.hash)) if last else (0, GENESIS_HASH)
        for c in theirs:
            store.hlc.observe(c.hlc)
        tx.counter = max(tx.counter, await _minted_past(store, tx))
        behind = max(0, hub_seq - common)
        report = {"at": tx.now, "behind": behind, "resequenced": resequenced, "copy_acked_seq": start,
                  "hub_seq": hub_seq, "id_counter": tx.counter}
        values = {_ACKED: str(hub_seq), _ACKED_HASH: hub_hash, RESTORED: "", CAUGHT_UP: json.dumps(report)}
        if behind:
            values[_OWN] = f"{common},{hub_seq}"
        await put_meta(tx, values)
        tx.audit("sync_catch_up", None, **report)
    line = (f"the copy was {behind} change(s) behind the hub: brought back from the hub (its changes up to "
            f"{hub_seq}); {resequenced} change(s) written since the restore renumbered after them; "
            f"anything written after the copy that never reached the hub is lost")
    if behind or resequenced:
        log.warning("caught up with the hub: %s", line)
    return line

async def _minted_past(store: Store, tx: Tx) -> int:
    """One past the highest counter of an ID this node number minted, in its own change log."""
    ids = (
        await tx.conn.execute(
            sa.select(t.change_log.c.mpi_id).where(
                t.change_log.c.node_id == store.node_id, t.change_log.c.kind == "identity.create"
            )
        )
    ).scalars()
    top = -1
    for mpi_id in ids:
        try:
            number, counter = parse_id(mpi_id).origin()
        except (IdError, TypeError):
            continue
        if number == store.node_number:
            top = max(top, counter)
    return top + 1
