"""The node's side of sync: what it pushes, what it does with the hub's replies, and its state.

A round is push then pull over any ``Link`` (HTTP in ``node/sync_client.py``; a bundle file in
``transports.py``, whose reply comes back as the hub's bundle): change sets of unacknowledged
changes, sized from the measured link speed so that each request stays well under the timeout,
each carrying the node's pull cursor so that the reply holds the acknowledgement and what to pull
(one round trip when there is nothing to do), and the matcher model the hub names (``modelsync``).
Hub envelopes are checked against the hub key pinned at enrolment and applied with the cursor in
one SQLite transaction. A refusal is kept, with its reason, for ``GET /sync/status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from nacl.signing import SigningKey, VerifyKey

from ..crypto import key_id
from ..registry import Registry
from ..storage import schema as t
from ..storage.store import Store
from . import modelsync
from .apply import Applier, NodePolicy, Remote
from .catchup import take_chain
from .changelog import GENESIS_HASH, Change
from .changeset import (
    decode_feed,
    decode_own,
    join_parts,
    open_ack,
    open_envelope,
    seal_changes,
    split_parts,
)
from .enrolment import registration_request
from .errors import BadEnvelope, Behind, ChainFork, ChainGap, Quarantined, RevokedKey, SyncError, status_of
from .meta import _ACKED, _ACKED_HASH, _OWN, _PULL, _PULL_HASH, CAUGHT_UP, RESTORED
from .meta import put_meta as _put_meta
from .transports import BundleLink, Link, LinkDown, open_bundle

__all__ = ["Link", "LinkDown", "Moved", "NodeSync"]  # Link, LinkDown: from transports

log = logging.getLogger("mpi.sync.node")

_OWN_PAGE = 5000


@dataclass
class Moved:
    """What one round moved."""

    pushed: int = 0
    pulled: int = 0
    acked_seq: int = 0
    pull_pos: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    slowest: float = 0.0  # seconds of the longest request
    more: bool = False
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"pushed {self.pushed} change(s), pulled {self.pulled}; acknowledged up to {self.acked_seq}, "
            f"feed at {self.pull_pos}; {self.requests} request(s) (slowest {self.slowest:.1f} s), "
            f"{self.bytes_sent} B sent, {self.bytes_received} B received"
        )


class NodeSync:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        keys: SigningKey | Mapping[str, SigningKey],
        *,
        batch_max: int = 1000,
        request_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.registry = registry
        # Every key this node has signed with, by key id: changes made before a rotation are
        # still signed (pushed) with the key they were written under.
        ring = {key_id(keys.verify_key): keys} if isinstance(keys, SigningKey) else dict(keys)
        self.keys: dict[str, SigningKey] = ring
        self.batch_max = batch_max
        self.request_seconds = request_seconds
        # A change set of registrations is ~30 B a change: even 1,000 of them cross a 2 kB/s link well
        # within the timeout; _measure shrinks the batches on slower links.
        self.batch = batch_max
        self.pull_limit = 500
        self._round = asyncio.Lock()
        self.last_moved: Moved | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, str]:
        return self.store.meta

    @property
    def enrolled(self) -> bool:
        return "hub_public_key" in self.meta

    @property
    def registered(self) -> bool:
        return self.meta.get("sync_registered") == "1"

    @property
    def acked(self) -> int:
        return int(self.meta.get(_ACKED, "0"))

    @property
    def pull_pos(self) -> int:
        return int(self.meta.get(_PULL, "0"))

    async def refresh(self) -> None:
        """Re-read the sync state: another process (``mpi-node sync``, an import) may have moved it."""
        await self.store.refresh()  # the change log too: an acknowledgement may reach past what this process wrote
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(t.node_meta.c.key, t.node_meta.c.value).where(
                    sa.or_(t.node_meta.c.key.like("sync_%"), t.node_meta.c.key.like("hub_%"))
                )
            )
            self.meta.update({k: v for k, v in rows})

    def regions(self) -> set[str]:
        return set(json.loads(self.meta.get("sync_regions", "[]")) or [self.meta.get("region", "")])

    @property
    def key(self) -> SigningKey:
        """The node's current signing key."""
        try:
            return self.keys[self.store.key_id]
        except KeyError:
            raise SyncError(f"the node's key {self.store.key_id} is missing from its data folder") from None

    def _key_of(self, changes: list[Change]) -> tuple[SigningKey, str]:
        kid = changes[0].key_id if changes else self.store.key_id
        if kid not in self.keys:
            raise SyncError(f"the key {kid} that signed changes from {changes[0].seq if changes else '-'} is missing")
        return self.keys[kid], kid

    async def rotate_key(self, new: SigningKey) -> str:
        """Name a new signing key in a change signed by the current one; returns the new key id."""
        if not self.registered:
            raise SyncError("register this node with its hub (sync once) before rotating its key")
        kid = key_id(new.verify_key)
        public = bytes(new.verify_key).hex()
        async with self.store.write("cli:key-rotate") as tx:
            tx.change("key.rotate", None, {"key_id": kid, "public_key": public})
            await _put_meta(tx, {"key_id": kid, "public_key": public})
            tx.audit("key_rotate", None, key_id=kid, previous=self.store.key_id)
        self.keys[kid] = new
        self.store.key_id = kid
        return kid

    def _hub_key(self) -> VerifyKey:
        return VerifyKey(bytes.fromhex(self.meta["hub_public_key"]))

    def registration_request(self) -> dict[str, Any]:
        proof = self.meta.get("sync_enrol_proof")
        if not proof:
            raise SyncError("this node was enrolled before enrolment keys and is not registered yet: "
                            "ask the hub for a new enrolment file (mpi-hub node enroll) and enrol a new node with it")
        return registration_request(self.meta["sync_name"], self.store.node_id, self.key, proof)

    async def registered_by_hub(self) -> None:
        async with self.store.write("sync") as tx:
            await _put_meta(tx, {"sync_registered": "1", "sync_enrol_proof": ""})

    # -- outgoing -----------------------------------------------------------------------------

    async def pending(self, limit: int, after: int | None = None) -> list[Change]:
        """Up to ``limit`` of this node's changes after ``after`` (default: the acknowledged ones)."""
        after = self.acked if after is None else after
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(t.change_log)
                .where(t.change_log.c.node_id == self.store.node_id, t.change_log.c.seq > after)
                .order_by(t.change_log.c.seq)
                .limit(limit)
            )
            return [
                Change(r.node_id, r.seq, r.hlc, r.key_id, r.kind, r.mpi_id, r.payload, r.prev_hash, r.hash) for r in rows
            ]

    async def outgoing(
        self, limit: int, *, pull: bool = True, after: tuple[int, str] | None = None, pull_limit: int | None = None
    ) -> tuple[bytes, list[Change]]:
        """A signed change set of up to ``limit`` changes after ``after`` (default: the acknowledged ones).

        It carries the pull cursor (``pull_limit`` 0: "where I stand", with no feed wanted in reply).
        """
        seq, digest = after if after is not None else (self.acked, self.meta.get(_ACKED_HASH, GENESIS_HASH))
        changes = await self.pending(limit, seq)
        # A set is signed by one key: stop where the key changed (a rotation).
        changes = [c for c in changes if c.key_id == (changes[0].key_id if changes else "")]
        extra: dict[str, Any] = {"sent_at": int(time.time() * 1000)}
        if pull:
            extra["pull"] = {"after": self.pull_pos, "limit": self.pull_limit if pull_limit is None else pull_limit}
            own = self._own_range()
            if own is not None:
                extra["pull"]["own"] = list(own)
            extra.update(modelsync.header(self.registry.matcher))  # the hub names its model if it differs
        key, kid = self._key_of(changes)
        sealed = seal_changes(
            changes, key, node_id=self.store.node_id, key_id=kid,
            next_seq=seq + 1 if changes else self.store.seq + 1,
            prev_hash=digest if changes else self.store.last_hash, **extra,
        )
        return sealed, changes

    # -- incoming -----------------------------------------------------------------------------

    async def incoming(self, reply: bytes) -> Moved:
        """Apply a reply or a bundle from the hub: acknowledgements, feed envelopes, the model it names."""
        moved = Moved()
        if not reply:
            return moved
        for kind, data in split_parts(reply):
            if kind == "A":
                await self._ack(data)
            elif kind == "E":
                applied, more = await self._feed(data)
                moved.pulled += applied
                moved.more = more
            elif kind == "M":
                await modelsync.noticed(self, data)
        moved.acked_seq, moved.pull_pos = self.acked, self.pull_pos
        return moved

    async def _ack(self, data: bytes) -> None:
        ack = open_ack(data, self._hub_key())
        if ack.node_id != self.store.node_id:
            raise BadEnvelope("the acknowledgement is for another node")
        if ack.seq == self.acked:
            return
        async with self.store.read() as conn:
            held = (
                await conn.execute(
                    sa.select(t.change_log.c.hash).where(
                        t.change_log.c.node_id == self.store.node_id, t.change_log.c.seq == ack.seq
                    )
                )
            ).scalar()
        if ack.seq > self.store.seq:
            raise Behind(ack.seq, f"the hub holds this node's changes up to {ack.seq}, beyond its own "
                                  f"{self.store.seq}: was it restored from a backup?")
        if (held or GENESIS_HASH) != ack.hash:
            raise Behind(ack.seq, f"the hub holds another change {ack.seq} than this node: was it restored "
                                  "from a backup?")
        async with self.store.write("sync") as tx:
            await _put_meta(tx, {_ACKED: str(ack.seq), _ACKED_HASH: ack.hash})

    async def _feed(self, data: bytes) -> tuple[int, bool]:
        env = open_envelope(data)
        if env.node_id != self.meta.get("hub_node_id"):
            raise BadEnvelope("this envelope is not from this node's hub")
        env.verify(self._hub_key())
        if env.header.get("to") not in (self.store.node_id, self.meta.get("sync_name")):
            raise BadEnvelope("this envelope is for another node")
        items = decode_feed(env)
        more = bool(env.header.get("more"))
        async with self.store.write("sync") as tx:
            # Read the cursor inside the transaction: two rounds at once must not both apply.
            cursor = int((await tx.conn.execute(sa.select(t.node_meta.c.value).where(t.node_meta.c.key == _PULL))).scalar() or 0)
            cursor_hash = (
                await tx.conn.execute(sa.select(t.node_meta.c.value).where(t.node_meta.c.key == _PULL_HASH))
            ).scalar() or GENESIS_HASH
            if env.last_seq <= cursor:
                return 0, more  # had it already
            if env.first_seq - 1 > cursor:
                raise ChainGap(cursor + 1, f"the hub's feed continues at {env.first_seq}, this node is at {cursor + 1}")
            if env.first_seq - 1 == cursor and env.prev_hash != cursor_hash:
                raise ChainFork(cursor, "the hub's feed is not the one this node followed")
            own = self._own_range()
            me = self.store.node_id
            # This node's own changes come in the feed only after a restore (those it pushed after
            # its copy was taken, ``own``); they are in its change log already (``_catch_up``).
            fresh = [i for i in items if i.pos > cursor
                     and (i.origin != me or (own is not None and own[0] < (i.seq or 0) <= own[1]))]
            remotes = [
                Remote(i.origin or "", i.seq or 0, i.hlc, i.kind, i.mpi_id, i.payload) for i in fresh
            ]
            applier = Applier(self.registry.frequencies, NodePolicy(self.regions()))
            await applier.apply(tx, remotes)
            logged = [
                {"node_id": i.origin, "seq": i.seq, "hlc": i.hlc, "key_id": "", "kind": i.kind, "mpi_id": i.mpi_id,
                 "payload": json.dumps(i.payload, sort_keys=True, separators=(",", ":")), "prev_hash": "",
                 "hash": ""}
                for i in fresh
                if i.origin and i.seq and i.origin != me
            ]
            if logged:
                await tx.conn.execute(tx.insert_ignore(t.change_log), logged)
            await _put_meta(tx, {_PULL: str(env.last_seq), _PULL_HASH: env.last_hash})
        return len(fresh), more

    # -- refusals and status --------------------------------------------------------------------

    async def refuse(self, first: int, last: int, exc: SyncError) -> None:
        _, code = status_of(exc)
        async with self.store.write("sync") as tx:
            await tx.conn.execute(
                sa.insert(t.sync_refusal).values(at=tx.now, first_seq=first, last_seq=last, code=code, reason=exc.message)
            )

    async def note(self, *, success: bool, error: str | None = None, blocked: SyncError | None = None) -> None:
        """Record how a round ended; ``blocked``: the hub refuses this node itself (revoked, quarantined)."""
        async with self.store.write("sync") as tx:
            if success:
                await _put_meta(tx, {"sync_last_success": tx.now, "sync_last_error": "", "sync_blocked": ""})
            else:
                values = {"sync_last_error": f"{tx.now} {error}"}
                if blocked is not None:
                    values["sync_blocked"] = json.dumps(
                        {"code": status_of(blocked)[1], "reason": blocked.message, "at": tx.now})
                await _put_meta(tx, values)

    async def status(self) -> dict[str, Any]:
        await self.refresh()
        async with self.store.read() as conn:
            refusals = (await conn.execute(sa.select(t.sync_refusal).order_by(t.sync_refusal.c.pk.desc()).limit(100))).all()
        return {
            "node_id": self.store.node_id,
            "name": self.meta.get("sync_name"),
            "node_number": self.store.node_number,
            "hub_url": self.meta.get("hub_url"),
            "enrolled": self.enrolled,
            "registered": self.registered,
            "regions": sorted(self.regions()),
            "cursors": {"last_seq": self.store.seq, "acked_seq": self.acked, "pull_pos": self.pull_pos},
            "pending_changes": self.store.seq - self.acked,
            "last_success": self.meta.get("sync_last_success") or None,
            "last_error": self.meta.get("sync_last_error") or None,
            # The hub refuses this node itself (revoked_key, quarantined): no round can succeed.
            "blocked": json.loads(self.meta["sync_blocked"]) if self.meta.get("sync_blocked") else None,
            # Restored from a backup and not synced since (the copy's state); what the last catch-up found.
            "restored": json.loads(self.meta[RESTORED]) if self.meta.get(RESTORED) else None,
            "caught_up": json.loads(self.meta[CAUGHT_UP]) if self.meta.get(CAUGHT_UP) else None,
            "last_round": asdict(self.last_moved) if self.last_moved else None,
            **modelsync.status(self),
            "refused": [
                {"at": r.at, "first_seq": r.first_seq, "last_seq": r.last_seq, "code": r.code, "reason": r.reason,
                 "pending": r.last_seq > self.acked}
                for r in refusals
            ],
        }

    # -- one round --------------------------------------------------------------------------------

    async def round(self, link: Link) -> Moved:
        """Push every pending change, then pull until the hub has nothing more: one round.

        Over a link whose replies come later (a bundle file) the round writes every pending
        change set once, and the hub's bundle brings the acknowledgements back.
        """
        async with self._round:
            await self.refresh()
            self._load_sizes()
            try:
                moved = await self._round_inner(link)
            except SyncError as exc:
                exc.upstream = True
                blocked = exc if isinstance(exc, RevokedKey | Quarantined) else None
                await self.note(success=False, error=f"{status_of(exc)[1]}: {exc.message}", blocked=blocked)
                raise
            except LinkDown as exc:
                await self.note(success=False, error=f"link down: {exc}")
                raise
            finally:
                await self._keep_sizes()
            if link.immediate:
                if said := await modelsync.follow(self, link):  # the model the hub named, if it is new here
                    moved.notes.append(said)
                await self.note(success=True)
                self.last_moved = moved
            return moved

    async def _round_inner(self, link: Link) -> Moved:
        moved = Moved()
        if not self.enrolled:
            raise SyncError("this node is not enrolled with a hub: run mpi-node enroll")
        if not self.registered and await link.register(self.registration_request()) is not None:
            await self.registered_by_hub()
        if self.meta.get(RESTORED):
            if not link.immediate:
                raise SyncError("this node was restored from a backup: sync it once over the network "
                                "(mpi-node sync) before it writes a bundle file")
            moved.notes.append(await self._catch_up(link))
        if not link.immediate:
            return await self._write_round(link, moved)
        gaps = behind = 0
        while True:
            before = (self.acked, self.pull_pos)
            envelope, changes = await self.outgoing(self.batch)
            count = len(changes)
            started = time.monotonic()
            try:
                reply = await link.push(envelope)
            except ChainGap as gap:
                gaps += 1
                if gaps > 2 or gap.expected_seq > self.store.seq + 1:
                    raise
                await self._rewind(gap.expected_seq - 1)
                continue
            except SyncError as exc:
                if count:
                    await self.refuse(self.acked + 1, self.acked + count, exc)
                raise
            except LinkDown:
                # A cut costs the request in flight: make the next ones smaller.
                self.batch = max(10, self.batch // 2)
                self.pull_limit = max(50, self.pull_limit // 2)
                raise
            took = time.monotonic() - started
            moved.slowest = max(moved.slowest, took)
            self._measure(len(envelope) + len(reply), took, count, len(envelope))
            try:
                got = await self.incoming(reply)
            except Behind:
                # A copy of this node older than what the hub holds of it (nothing was pushed:
                # a pushed change would have been refused as a fork): catch up, then go on.
                behind += 1
                if behind > 1:
                    raise
                moved.notes.append(await self._catch_up(link))
                continue
            moved.requests += 1
            moved.bytes_sent += len(envelope)
            moved.bytes_received += len(reply)
            moved.pulled += got.pulled
            moved.pushed += max(0, self.acked - before[0]) if count else 0
            moved.acked_seq, moved.pull_pos = self.acked, self.pull_pos
            if self.acked >= self.store.seq and not got.more:
                if self._own_range() is not None:
                    # The feed has been read to its end since the catch-up: every own change it held is applied.
                    async with self.store.write("sync") as tx:
                        await _put_meta(tx, {_OWN: ""})
                return moved
            if (self.acked, self.pull_pos) == before:
                raise SyncError("the hub acknowledged nothing and sent nothing new: giving up this round")

    async def _write_round(self, link: Link, moved: Moved) -> Moved:
        """Every unacknowledged change set, once, into a link that answers later."""
        sent = (self.acked, self.meta.get(_ACKED_HASH, GENESIS_HASH))
        while True:
            # No feed in reply (it comes in the hub's bundle); the pull cursor tells the hub what to put there.
            envelope, changes = await self.outgoing(self.batch_max, after=sent, pull_limit=0)
            if not changes and moved.requests:
                return moved
            await link.push(envelope)
            moved.requests += 1
            moved.bytes_sent += len(envelope)
            moved.pushed += len(changes)
            if not changes:
                return moved
            sent = (changes[-1].seq, changes[-1].hash)

    async def _keep_sizes(self) -> None:
        """Batch sizes outlive the process: the next ``mpi-node sync`` starts from what this link allows."""
        sizes = f"{self.batch},{self.pull_limit}"
        if self.meta.get("sync_sizes") != sizes:
            async with self.store.write("sync") as tx:
                await _put_meta(tx, {"sync_sizes": sizes})

    def _load_sizes(self) -> None:
        batch, _, pull = self.meta.get("sync_sizes", "").partition(",")
        if batch.isdigit() and pull.isdigit():
            self.batch, self.pull_limit = min(int(batch), self.batch_max), int(pull)

    async def _rewind(self, seq: int) -> None:
        async with self.store.read() as conn:
            digest = (
                await conn.execute(
                    sa.select(t.change_log.c.hash).where(t.change_log.c.node_id == self.store.node_id, t.change_log.c.seq == seq)
                )
            ).scalar()
        async with self.store.write("sync") as tx:
            await _put_meta(tx, {_ACKED: str(seq), _ACKED_HASH: digest or GENESIS_HASH})

    def _measure(self, size: int, seconds: float, count: int, sent: int) -> None:
        """Size the next batches so that one request takes about ``request_seconds`` on this link."""
        if count < 10 or seconds <= 0:
            return
        rate = size / seconds
        per_change = sent / count
        target = int(rate * self.request_seconds / per_change)
        self.batch = max(10, min(self.batch_max, target, self.batch * 4))
        self.pull_limit = max(50, min(5000, self.batch * 2))

    # -- catching up after a restore ------------------------------------------------------------

    def _own_range(self) -> tuple[int, int] | None:
        after, _, upto = self.meta.get(_OWN, "").partition(",")
        return (int(after), int(upto)) if after.isdigit() and upto.isdigit() else None

    async def _catch_up(self, link: Link) -> str:
        """Learn from the hub where this node's chain stands and go on from there; returns what it found.

        The hub sends back this node's changes after its acknowledged sequence as it holds them
        (``HubSync._own``, signed by the hub); ``catchup.take_chain`` makes them this node's.
        """
        await self.refresh()
        me, hub_key = self.store.node_id, self._hub_key()
        start, start_hash = self.acked, self.meta.get(_ACKED_HASH, GENESIS_HASH)
        head: tuple[int, str] | None = None
        theirs: list[Change] = []
        after, after_hash = start, start_hash
        while True:
            key, kid = self._key_of([])
            request = seal_changes(
                [], key, node_id=me, key_id=kid, next_seq=start + 1, prev_hash=start_hash,
                sent_at=int(time.time() * 1000), own={"after": after, "limit": _OWN_PAGE},
            )
            more = False
            for kind, data in split_parts(await link.push(request)):
                if kind == "A":
                    ack = open_ack(data, hub_key)
                    if ack.node_id != me:
                        raise BadEnvelope("the acknowledgement is for another node")
                    head = (ack.seq, ack.hash)
                elif kind == "O":
                    if head is not None and head[0] <= start:
                        continue  # the hub holds no more of this node than the copy (a hub restored from a dump)
                    env = open_envelope(data)
                    if env.node_id != self.meta.get("hub_node_id"):
                        raise BadEnvelope("this envelope is not from this node's hub")
                    env.verify(hub_key)
                    if env.first_seq != after + 1 or env.prev_hash != after_hash:
                        raise ChainFork(after, f"the hub's chain of this node does not continue its change {after}: "
                                               "the copy is not this node's past")
                    page = decode_own(env, me)
                    theirs += page
                    if page:
                        after, after_hash = page[-1].seq, page[-1].hash
                    more = bool(env.header.get("more")) and bool(page)
            if not more:
                break
        if head is None:  # the hub stands where this node thinks: nothing to catch up
            head = (start, start_hash)
        if head[0] < start:
            # The hub holds less of this node than the copy: nothing comes back; the round pushes the rest.
            async with self.store.read() as conn:
                held = (await conn.execute(sa.select(t.change_log.c.hash).where(
                    t.change_log.c.node_id == me, t.change_log.c.seq == head[0]))).scalar()
            if (held or GENESIS_HASH) != head[1]:
                raise ChainFork(head[0], f"the hub holds another change {head[0]} of this node than its copy")
            return await take_chain(self.store, start, head, [])
        if head[0] != after or head[1] != after_hash:
            raise ChainFork(head[0], "the hub's acknowledgement and the changes it sent back disagree")
        rotated = [str(json.loads(c.payload)["key_id"]) for c in theirs if c.kind == "key.rotate"]
        if any(k not in self.keys for k in rotated):
            raise SyncError("this node's key was rotated after the copy was taken and the new key is not in it: "
                            "it cannot sign as this node any more; replace it (mpi-hub node replace NAME)")
        return await take_chain(self.store, start, head, theirs)

    # -- files ------------------------------------------------------------------------------------

    async def export_bundle(self) -> tuple[bytes, int]:
        """Everything the hub does not have yet, as a bundle file's content; (bytes, changes).

        The same round as over HTTP, into a ``BundleLink``; the end marker is signed with the
        key of the first change set (the one the hub knows; a rotation inside the file names
        the next), or for a node the hub has never heard of, with the key it registers.
        """
        link = BundleLink()
        moved = await self.round(link)
        first = await self.pending(1)
        key, kid = self._key_of(first)
        data = link.seal(key, sender=self.store.node_id, to=self.meta.get("hub_node_id", ""), key_id=kid)
        return data, moved.pushed

    async def import_bundle(self, data: bytes) -> Moved:
        """Apply the hub's bundle: checked whole (framing, digests, the pinned hub key) before anything applies."""
        if not self.enrolled:
            raise SyncError("this node is not enrolled with a hub: run mpi-node enroll")
        bundle = open_bundle(data)
        if bundle.sender != self.meta.get("hub_node_id"):
            raise BadEnvelope("this bundle is not from this node's hub")
        bundle.verify(self._hub_key())
        if bundle.header.get("to") not in (self.store.node_id, self.meta.get("sync_name")):
            raise BadEnvelope("this bundle is for another node")
        kinds = {kind for kind, _ in bundle.parts}
        if not kinds <= {"A", "E"}:
            raise BadEnvelope("a bundle from the hub holds acknowledgements and feed envelopes only")
        moved = await self.incoming(join_parts(bundle.parts))
        await self.note(success=True)
        return moved
