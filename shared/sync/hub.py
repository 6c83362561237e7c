"""The hub's side of sync: enrolment, accepting pushed change sets, and the feed nodes pull.

Whatever carried the bytes (HTTP, a file from a USB stick), ``HubSync.receive`` does the
same checks: a known, unrevoked key of the node that signed; a chain that continues what
the hub holds (a gap is refused with the expected sequence, a fork quarantines the node and
keeps the proof); clocks no further ahead than ``max_clock_skew_seconds``. Then, in one
transaction: the changes, their effects, their feed rows, the node's new cursor and the
signed acknowledgement, which a replay gets again.

The feed is one ordered, hash-chained list of positions in ``change_log``; each row says
which regions it concerns. A node pulls the rows of its regions, the merges touching them,
the rows of the identities outside its regions that it holds (``sync_holding``: recorded
when its change sets touch them), and the status of every card in the country (without the
person when the card's identity is neither in its regions nor held).

A set is applied in a SAVEPOINT; a change that cannot be applied is set aside
(``sync_setaside``) with its reason and the rest goes on, so one bad change never blocks a
node. A revoked node gets nothing more, push or pull.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from nacl.signing import SigningKey, VerifyKey

from ..crypto import key_id
from ..errors import BadRequest
from ..registry import Registry
from ..schemas import decode_json
from ..storage import schema as t
from ..storage.store import Store, Tx
from . import holdings, modelsync
from .apply import Applier, HubPolicy, NodeAuthority
from .changelog import GENESIS_HASH, Change
from .changeset import (
    Ack,
    Envelope,
    FeedItem,
    decode_changes,
    join_parts,
    open_envelope,
    seal_ack,
    seal_feed,
    seal_own,
)
from .enrolment import Enrolment, Registration, register, reserve
from .errors import (
    BadEnvelope,
    ChainFork,
    ChainGap,
    ClockSkew,
    Quarantined,
    RevokedKey,
    SyncError,
    UnknownKey,
)
from .feed import CARD_KINDS, FeedWriter
from .hlc import hlc_to_ms
from .setaside import apply_or_set_aside
from .transports import open_bundle, seal_bundle

__all__ = ["CARD_KINDS", "HubSync"]

log = logging.getLogger("mpi.sync.hub")

_PULL_MAX = 5000
_PULL_FRESH_MS = 600_000  # a pull rides on a signed request at most this old


def _int(value: Any, default: int = 0) -> int:
    """A header's number, or ``default`` when it is not one (a signed header is still the node's input)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _iso(ms: int) -> str:
    """Milliseconds since the epoch as the database keeps times (``2026-05-15T09:00:00.123Z``)."""
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return "9999-12-31T23:59:59.999Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubSync:
    def __init__(self, store: Store, registry: Registry, *, max_skew_seconds: float = 300) -> None:
        self.store = store
        self.registry = registry
        policy = HubPolicy()
        self.applier = Applier(registry.frequencies, policy)
        self.max_skew_ms = int(max_skew_seconds * 1000)
        self.feed = FeedWriter(policy)
        store.change_hooks.append(self.feed.local)

    def start(self, signing_key: SigningKey) -> None:
        """Take the hub's signing key (kept in the database, read once the store is open)."""
        self.key = signing_key
        self.key_id = key_id(signing_key.verify_key)

    # -- enrolment -------------------------------------------------------------------------

    async def enrol(self, name: str, region: str, hub_url: str, subscribe: list[str], *,
                    again: bool = False) -> Enrolment:
        """Reserve a node number and a one-time secret for a node to come (``enrolment.reserve``)."""
        return await reserve(self.store, self.key, name, region, hub_url, subscribe, again=again)

    async def replace(self, name: str, hub_url: str, successor: str | None = None) -> Enrolment:
        """Revoke lost node ``name`` and reserve a replacement with its regions and holdings, under a new number.

        The replacement (default name ``NAME-2``, ``-3``...) starts from an empty database: its
        first pull is the whole feed of its regions and holdings, the lost node's changes with
        their author. What the lost node wrote and never pushed is lost.
        """
        async with self.store.read() as conn:
            node = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).first()
            names = set((await conn.execute(sa.select(t.sync_node.c.name))).scalars())
        if node is None:
            raise ValueError(f"no node named {name}")
        if successor is None:
            successor = next(f"{name}-{n}" for n in range(2, 10_000) if f"{name}-{n}" not in names)
        regions = json.loads(node.regions)
        return await reserve(self.store, self.key, successor, node.region, hub_url,
                             [r for r in regions if r != node.region], replaces=name)

    async def register(self, body: Any) -> dict[str, Any]:
        """A node presents its key, proven by its enrolment secret (``enrolment.register``)."""
        return await register(self.store, body)

    async def revoke(self, name: str) -> int:
        """Revoke a node: its keys sign nothing more; what it pushed so far stays."""
        async with self.store.write("cli:revoke") as tx:
            node = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).first()
            if node is None:
                raise ValueError(f"no node named {name}")
            await tx.conn.execute(sa.update(t.sync_node).where(t.sync_node.c.name == name).values(status="revoked"))
            result = await tx.conn.execute(
                sa.update(t.sync_key)
                .where(t.sync_key.c.node_name == name, t.sync_key.c.status != "revoked")
                .values(status="revoked", last_seq=sa.func.coalesce(t.sync_key.c.last_seq, node.acked_seq))
            )
            tx.audit("node_revoke", None, name=name, acked_seq=node.acked_seq)
        return int(result.rowcount)

    async def nodes(self) -> list[dict[str, Any]]:
        """Every enrolled node, its cursors and state, and the changes of it the hub set aside."""
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(t.sync_node).order_by(t.sync_node.c.node_number))).all()
            aside = (
                await conn.execute(sa.select(t.sync_setaside).order_by(t.sync_setaside.c.pk.desc()).limit(1000))
            ).all()
        by_node: dict[str, list[dict[str, Any]]] = {}
        for a in reversed(aside):
            by_node.setdefault(a.node_id, []).append(
                {"seq": a.seq, "kind": a.kind, "mpi_id": a.mpi_id, "reason": a.reason, "at": a.at})
        replaced_by = {r.replaces: r.name for r in rows if r.replaces}
        return [
            {"name": r.name, "node_id": r.node_id, "node_number": r.node_number, "regions": json.loads(r.regions),
             "status": r.status, "acked_seq": r.acked_seq, "pull_pos": r.pull_pos, "seen_at": r.seen_at,
             "note": r.note, "replaces": r.replaces, "replaced_by": replaced_by.get(r.name),
             "set_aside": by_node.get(r.node_id or "", [])}
            for r in rows
        ]

    # -- receiving ---------------------------------------------------------------------------

    async def _authenticate(self, env: Envelope) -> Any:
        async with self.store.read() as conn:
            key = (await conn.execute(sa.select(t.sync_key).where(t.sync_key.c.key_id == env.key_id))).first()
            node = None
            if key is not None:
                node = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == key.node_name))).first()
        if key is None or node is None:
            raise UnknownKey(f"unknown key {env.key_id[:16]}")
        if node.node_id != env.node_id:
            raise UnknownKey("this key belongs to another node")
        env.verify(VerifyKey(bytes.fromhex(key.public_key)))
        self._in_standing(env, node, key)
        return node

    @staticmethod
    def _in_standing(env: Envelope, node: Any, key: Any) -> None:
        """Refuse an envelope of a quarantined or revoked node, or of a key past what it may sign.

        Checked when the envelope arrives and again inside the write transaction that would
        apply it, so a push racing ``mpi-hub node revoke`` cannot apply after the revocation.
        """
        if node.status == "quarantined":
            raise Quarantined(f"node {node.name} is quarantined: {node.note or 'its chain forked'}")
        if node.status == "revoked" or key.status == "revoked":
            # A revoked node gets nothing more, push or pull: its changes up to the revocation stay.
            raise RevokedKey(f"node {node.name} was revoked at the hub: it may neither push nor pull")
        if key.status != "active" and (key.last_seq is None or env.last_seq > key.last_seq):
            raise RevokedKey(f"this key of node {node.name} was replaced at sequence {key.last_seq}")
        if env.first_seq < key.first_seq:
            raise UnknownKey(f"this key signs sequences from {key.first_seq} on")

    async def receive(self, raw: bytes, *, reply_feed: bool = True) -> bytes:
        """Accept a pushed envelope; the reply holds the acknowledgement and what the node must pull."""
        env = open_envelope(raw)
        node = await self._authenticate(env)
        changes = decode_changes(env)
        limit = int(time.time() * 1000) + self.max_skew_ms
        for change in changes:
            if hlc_to_ms(change.hlc) > limit:
                raise ClockSkew(
                    f"change {change.seq} is stamped {(hlc_to_ms(change.hlc) - limit + self.max_skew_ms) // 1000} s "
                    "ahead of the hub's clock: fix the node's clock",
                    seq=change.seq,
                )
        try:
            ack = await self._accept(env, node, changes, max_hlc=((limit + 1) << 16) - 1)
        except ChainFork as fork:
            await self._quarantine(env, node, fork)
            raise
        parts: list[tuple[str, bytes]] = [("A", ack)] if ack else []
        own = env.header.get("own")
        if reply_feed and isinstance(own, dict) and self._fresh(env):
            # A node catching up (restored from a copy older than what it pushed): its own chain back.
            parts.append(("O", await self._own(node, _int(own.get("after")), _int(own.get("limit"), 5000))))
        pull = env.header.get("pull")
        if reply_feed and isinstance(pull, dict) and int(pull.get("limit", 0)) > 0 and self._fresh(env):
            mine = pull.get("own")
            own_range = (_int(mine[0]), _int(mine[1])) if isinstance(mine, list) and len(mine) == 2 else None
            sealed, _, _ = await self._feed(node.name, int(pull.get("after", 0)), int(pull.get("limit", 500)),
                                            own=own_range)
            if sealed is not None:
                parts.append(("E", sealed))
        notice = await modelsync.notice_for(self, env.header, node) if reply_feed and isinstance(pull, dict) else None
        if notice is not None:  # the node scores with another model than the hub's current one
            parts.append(("M", notice))
        return join_parts(parts)

    async def _own(self, node: Any, after: int, limit: int) -> bytes:
        """Node ``node``'s own changes after ``after`` as the hub holds them, signed by the hub (``seal_own``).

        What a node restored from an old copy pushed after that copy was taken comes back to it
        this way, hash-chained from its change ``after``, so that it goes on from the hub's head.
        """
        limit = max(1, min(limit, _PULL_MAX))
        async with self.store.read() as conn:
            current = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == node.name))).one()
            acked = int(current.acked_seq)
            after = max(0, min(after, acked))
            c = t.change_log
            rows = (
                await conn.execute(
                    sa.select(c).where(c.c.node_id == node.node_id, c.c.seq > after, c.c.seq <= acked)
                    .order_by(c.c.seq).limit(limit)
                )
            ).all()
            after_hash = (
                await conn.execute(sa.select(c.c.hash).where(c.c.node_id == node.node_id, c.c.seq == after))
            ).scalar() or GENESIS_HASH
        changes = [Change(r.node_id, r.seq, r.hlc, r.key_id, r.kind, r.mpi_id, r.payload, r.prev_hash, r.hash)
                   for r in rows]
        more = bool(changes) and changes[-1].seq < acked
        return seal_own(changes, self.key, hub_id=self.store.node_id, key_id=self.key_id, to=node.node_id,
                        after=after, after_hash=after_hash, more=more)

    @staticmethod
    def _fresh(env: Envelope) -> bool:
        sent = env.header.get("sent_at")
        return isinstance(sent, int) and abs(time.time() * 1000 - sent) < _PULL_FRESH_MS

    async def _accept(self, env: Envelope, node: Any, changes: list[Change], *, max_hlc: int) -> bytes | None:
        async with self.store.write(f"node:{node.name}") as tx:
            # Under the write lock: a revocation committed since the envelope was authenticated counts.
            current = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == node.name))).one()
            key = (await tx.conn.execute(sa.select(t.sync_key).where(t.sync_key.c.key_id == env.key_id))).one()
            self._in_standing(env, current, key)
            acked, acked_hash = int(current.acked_seq), str(current.acked_hash)
            await self._seen(tx, env, current)
            if not changes:
                # A signed request with nothing in it: tell the node where the hub stands if it differs.
                if env.first_seq - 1 != acked:
                    return seal_ack(Ack(env.node_id, acked, acked_hash), self.key)
                return None
            if env.first_seq > acked + 1:
                raise ChainGap(acked + 1)
            if env.first_seq <= acked:
                held = dict(
                    (
                        await tx.conn.execute(
                            sa.select(t.change_log.c.seq, t.change_log.c.hash).where(
                                t.change_log.c.node_id == env.node_id,
                                t.change_log.c.seq.between(env.first_seq - 1, min(acked, env.last_seq)),
                            )
                        )
                    ).all()
                )
                for change in changes:
                    if change.seq <= acked and held.get(change.seq) != change.hash:
                        raise ChainFork(change.seq)
            elif env.prev_hash != acked_hash:
                raise ChainFork(env.first_seq)
            if env.last_seq <= acked:
                stored = (
                    await tx.conn.execute(
                        sa.select(t.sync_batch.c.ack).where(
                            t.sync_batch.c.node_id == env.node_id, t.sync_batch.c.last_seq == env.last_seq
                        )
                    )
                ).scalar()
                return bytes(stored) if stored is not None else seal_ack(Ack(env.node_id, env.last_seq, env.last_hash), self.key)
            tail = [c for c in changes if c.seq > acked]
            await self._store_changes(tx, tail)
            regions = set(json.loads(current.regions))
            authority = NodeAuthority(current.name, int(current.node_number), regions, max_hlc)
            routes = await apply_or_set_aside(self.applier, tx, tail, authority)
            await self.feed.remote(tx, tail, routes)
            # What the hub refused gives the node no holding.
            await holdings.record(tx, current.name, regions, [c for c, r in zip(tail, routes, strict=True) if r.refused is None])
            for change, route in zip(tail, routes, strict=True):
                if change.kind == "key.rotate" and route.refused is None:
                    await self._rotate(tx, node.name, change)
            ack = seal_ack(Ack(env.node_id, env.last_seq, env.last_hash), self.key)
            await tx.conn.execute(
                sa.update(t.sync_node)
                .where(t.sync_node.c.name == node.name)
                .values(acked_seq=env.last_seq, acked_hash=env.last_hash, seen_at=max(tx.now, current.seen_at or ""))
            )
            await tx.conn.execute(
                sa.insert(t.sync_batch).values(
                    node_id=env.node_id, last_seq=env.last_seq, first_seq=env.first_seq, last_hash=env.last_hash,
                    envelope=env.raw, ack=ack, received_at=tx.now,
                )
            )
            tx.audit("sync_push", None, node=node.name, first_seq=acked + 1, last_seq=env.last_seq)
        return ack

    @staticmethod
    async def _seen(tx: Tx, env: Envelope, current: Any) -> None:
        """The node's pull cursor and when it was last heard of: forward only.

        A replayed old envelope (anyone may have a copy) says nothing new: its pull cursor is
        behind the one held, and it was sent (``sent_at``) before the node was last seen.
        """
        values: dict[str, Any] = {}
        pull = env.header.get("pull")
        if isinstance(pull, dict) and type(pull.get("after")) is int and pull["after"] > int(current.pull_pos):
            top = (await tx.conn.execute(sa.select(sa.func.max(t.sync_feed.c.pos)))).scalar() or 0
            if min(pull["after"], top) > int(current.pull_pos):
                values["pull_pos"] = min(pull["after"], top)  # no further than the feed goes
        sent = env.header.get("sent_at")
        if type(sent) is int and sent > 0:
            seen = min(tx.now, _iso(sent))
            if seen > (current.seen_at or ""):
                values["seen_at"] = seen
        if values:
            await tx.conn.execute(sa.update(t.sync_node).where(t.sync_node.c.name == current.name).values(**values))

    async def _store_changes(self, tx: Tx, changes: list[Change]) -> None:
        await tx.bulk_insert(
            t.change_log,
            [
                {"node_id": c.node_id, "seq": c.seq, "hlc": c.hlc, "key_id": c.key_id, "kind": c.kind,
                 "mpi_id": c.mpi_id, "payload": c.payload, "prev_hash": c.prev_hash, "hash": c.hash}
                for c in changes
            ],
        )

    async def _rotate(self, tx: Tx, name: str, change: Change) -> None:
        p = json.loads(change.payload)
        await tx.conn.execute(
            sa.update(t.sync_key)
            .where(t.sync_key.c.key_id == change.key_id, t.sync_key.c.status == "active")
            .values(status="rotated", last_seq=change.seq)
        )
        await tx.conn.execute(
            tx.insert_ignore(t.sync_key).values(
                key_id=str(p["key_id"]), node_name=name, public_key=str(p["public_key"]), status="active",
                first_seq=change.seq + 1, created_at=tx.now,
            )
        )

    async def _quarantine(self, env: Envelope, node: Any, fork: ChainFork) -> None:
        async with self.store.write(f"node:{node.name}") as tx:
            held = (
                await tx.conn.execute(
                    sa.select(t.change_log.c.hash).where(t.change_log.c.node_id == env.node_id, t.change_log.c.seq == fork.seq)
                )
            ).scalar()
            await tx.conn.execute(
                sa.insert(t.sync_fork).values(
                    node_id=env.node_id, seq=fork.seq, held_hash=held or GENESIS_HASH, envelope=env.raw, at=tx.now
                )
            )
            await tx.conn.execute(
                sa.update(t.sync_node)
                .where(t.sync_node.c.name == node.name)
                .values(status="quarantined", note=f"chain forked at sequence {fork.seq} ({tx.now})")
            )
            tx.audit("node_quarantine", None, name=node.name, seq=fork.seq)
        log.warning("node %s quarantined: its chain forked at %s", node.name, fork.seq)

    # -- the feed -------------------------------------------------------------------------------

    async def _feed(self, name: str, after: int, limit: int, *, always: bool = False,
                    own: tuple[int, int] | None = None) -> tuple[bytes | None, int, bool]:
        """A signed envelope of what node ``name`` must apply after feed position ``after``.

        None when the node is at the end of the feed already (an idle round costs no envelope).
        A node's own changes are not in its feed, except those of sequences ``own`` = (after,
        upto]: what a restored node pushed after its copy was taken, which it must apply again in
        the feed's order (interleaved with the others' changes it depends on).
        """
        limit = max(1, min(limit, _PULL_MAX))
        async with self.store.read() as conn:
            node = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).one()
            if node.status == "revoked":  # revoked since its request was authenticated
                raise RevokedKey(f"node {name} was revoked at the hub: it may neither push nor pull")
            regions = set(json.loads(node.regions))
            top = (await conn.execute(sa.select(sa.func.max(t.sync_feed.c.pos)))).scalar() or 0
            after = max(0, min(after, top))
            if after == top and not always:
                return None, after, False
            f, c = t.sync_feed, t.change_log
            held_ids = holdings.held_by(name)
            held = set((await conn.execute(held_ids)).scalars())
            rows = (
                await conn.execute(
                    sa.select(f.c.pos, f.c.node_id, f.c.seq, f.c.kind, f.c.mpi_id, f.c.region_a, f.c.region_b,
                              f.c.exclude_region, c.c.hlc, c.c.payload)
                    .join(c, sa.and_(c.c.node_id == f.c.node_id, c.c.seq == f.c.seq))
                    .where(
                        f.c.pos > after,
                        f.c.pos <= top,
                        sa.or_(f.c.node_id != (node.node_id or ""),
                              sa.and_(f.c.seq > own[0], f.c.seq <= own[1]) if own else sa.false()),
                        sa.or_(f.c.region_a.in_(regions), f.c.region_b.in_(regions), f.c.kind.in_(CARD_KINDS),
                              f.c.mpi_id.in_(held_ids)),
                    )
                    .order_by(f.c.pos)
                    .limit(limit)
                )
            ).all()
            upto = rows[-1].pos if len(rows) == limit else top
            hashes = dict(
                (await conn.execute(sa.select(f.c.pos, f.c.hash).where(f.c.pos.in_([after, upto])))).all()
            )
            items: list[FeedItem] = []
            for r in rows:
                if r.exclude_region is not None and r.exclude_region in regions:
                    continue
                by_region = r.region_a in regions or r.region_b in regions
                if not by_region and r.mpi_id in held and r.kind == "evict":
                    continue  # a holder keeps what it holds: an identity leaving a region is no reason to drop it
                payload = json.loads(r.payload)
                in_scope = by_region or r.mpi_id in held
                if r.kind in CARD_KINDS and not in_scope:
                    # Only what verify needs, without the person.
                    count = payload.get("programme_count", 0)
                    status = "valid" if r.kind == "card.issue" else "revoked"
                    items.append(FeedItem(r.pos, None, None, r.hlc, "card.status", None,
                                          {"token_hash": payload["token_hash"], "status": status, "programme_count": count}))
                    continue
                payload.pop("route", None)
                items.append(FeedItem(r.pos, r.node_id, r.seq, r.hlc, r.kind, r.mpi_id, payload))
        sealed = seal_feed(
            items, self.key, hub_id=self.store.node_id, key_id=self.key_id, to=node.node_id or name,
            after=after, after_hash=hashes.get(after, GENESIS_HASH), upto=upto,
            upto_hash=hashes.get(upto, GENESIS_HASH), more=upto < top,
        )
        return sealed, upto, upto < top

    async def pull(self, raw: bytes) -> bytes:
        """A signed request with no changes: the reply is what the node must pull."""
        env = open_envelope(raw)
        if env.count != 0:
            raise BadEnvelope("a pull request carries no changes: push them")
        if not isinstance(env.header.get("pull"), dict):
            raise BadEnvelope("a pull request needs pull.after")
        await self._authenticate(env)
        if not self._fresh(env):
            raise BadEnvelope("the pull request is stale or has no sent_at: check the node's clock")
        return await self.receive(raw)

    async def export_for(self, name: str, limit: int = _PULL_MAX) -> bytes:
        """A bundle for a node with no network: its latest acknowledgement and what it must pull."""
        async with self.store.read() as conn:
            node = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).first()
        if node is None:
            raise ValueError(f"no node named {name}")
        if node.status == "revoked":
            raise RevokedKey(f"node {name} was revoked: it gets nothing more")
        # A node that never pushed (its key is not registered yet) gets no acknowledgement, only the feed,
        # addressed to its name.
        parts = [("A", seal_ack(Ack(node.node_id, node.acked_seq, node.acked_hash), self.key))] if node.node_id else []
        after, more = int(node.pull_pos), True
        while more:
            sealed, after, more = await self._feed(name, after, limit, always=True)
            assert sealed is not None
            parts.append(("E", sealed))
        return seal_bundle(parts, self.key, sender=self.store.node_id, to=node.node_id or name, key_id=self.key_id)

    async def import_bundle(self, data: bytes) -> tuple[int, int]:
        """Apply a node's bundle file: its registration, then its change sets; (sets, changes).

        Nothing applies unless the whole file holds: its framing, part count and digests, the
        end marker's signature by a key of the sending node, and every envelope's framing.
        Each set then goes through ``receive``, the code behind ``POST /sync/push``; should
        one be refused, the error says how many sets were applied before it.
        """
        bundle = open_bundle(data)
        requests: list[tuple[Registration, dict[str, Any]]] = []
        envelopes: list[Envelope] = []
        for n, (kind, part) in enumerate(bundle.parts, 1):
            if kind == "R":
                try:
                    body = decode_json(part)
                except BadRequest:
                    raise BadEnvelope(f"part {n}: the registration is not JSON") from None
                requests.append((Registration.parse(body), body))
            elif kind == "E":
                try:
                    envelopes.append(open_envelope(part))
                except BadEnvelope as exc:
                    raise BadEnvelope(f"part {n}: {exc.message}") from None
            else:
                raise BadEnvelope(f"part {n}: a node's bundle holds no {kind!r} part")
        async with self.store.read() as conn:
            key = (await conn.execute(sa.select(t.sync_key).where(t.sync_key.c.key_id == bundle.key_id))).first()
        if key is not None:
            verify = VerifyKey(bytes.fromhex(key.public_key))
        else:
            named = [r.verify_key for r, _ in requests if key_id(r.verify_key) == bundle.key_id]
            if not named:
                raise UnknownKey(f"the bundle is signed by an unknown key {bundle.key_id[:16]}")
            verify = named[0]
        bundle.verify(verify)
        for _, body in requests:
            await self.register(body)
        sets = changes = 0
        for n, env in enumerate(envelopes, 1):
            try:
                await self.receive(env.raw, reply_feed=False)
            except SyncError as exc:
                exc.message = (
                    f"change set {n} of {len(envelopes)} (sequences {env.first_seq}..{env.last_seq}) was refused "
                    f"after {sets} set(s), {changes} change(s) applied: {exc.message}"
                )
                exc.args = (exc.message,)
                raise
            sets += 1
            changes += env.count
        return sets, changes
