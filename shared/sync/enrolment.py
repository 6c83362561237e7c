"""Enrolment: how a node gets its number and the hub's key, and registers its own key.

At the hub, ``mpi-hub node enroll`` reserves a node number and a one-time secret and writes
an enrolment file (``Enrolment``, mode 0600). The secret seeds an Ed25519 key pair
(``enrolment_key``): the hub keeps **only its public half** (``sync_node.enrol_key``), which
checks an enrolment and cannot make one, so a copy of the hub's database completes none.

The node takes the file (``enrol``), and at once signs, with the secret's key, its own name,
node id and public key (``enrolment_proof``); it keeps that signature until the hub has its
key, never the secret. The signature names the node's key, so a copy of the node's database
can only register that key, whose private half is in the node's key file, not in the
database. The registration (``registration_request``) carries the name, id, key, the
enrolment signature and a signature by the node's key. **The secret itself never travels**:
not over HTTP, not in a bundle file.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..crypto import key_id
from ..ids import MAX_NODE_NUMBER
from ..storage import schema as t
from ..storage.store import Store
from .changelog import canonical_json
from .errors import EnrolmentRefused
from .meta import put_meta

__all__ = ["FORMAT", "REFUSED", "Enrolment", "Registration", "enrol", "enrolment_key", "enrolment_proof", "register", "registration_request", "reserve"]

# The one answer to every refused enrolment: which names exist is nobody's business.
REFUSED = "the enrolment was refused: no pending enrolment is proven by this request"
FORMAT = 2  # "mpi_enrolment" of the file: 2 since the secret seeds a key pair (1 was a MAC key)


def enrolment_key(secret: str) -> SigningKey:
    """The key pair a one-time secret seeds; the hub keeps its public half only."""
    return SigningKey(hashlib.sha256(b"mpi-enrol-seed\x00" + secret.encode()).digest())


def enrolment_proof(name: str, node_id: str, public_key: str) -> bytes:
    """What a registration signs and MACs: this node name, this node id, this key."""
    return canonical_json(["mpi-enrol", name, node_id, public_key]).encode()


def registration_request(name: str, node_id: str, key: SigningKey, enrol_signature: str) -> dict[str, Any]:
    """The node's registration: its key, signed by that key and by the enrolment secret's key."""
    public = bytes(key.verify_key).hex()
    proof = enrolment_proof(name, node_id, public)
    return {"name": name, "node_id": node_id, "public_key": public, "enrol_signature": enrol_signature,
            "signature": key.sign(proof).signature.hex()}


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration request whose own signature holds (the enrolment signature is checked by ``proves``)."""

    name: str
    node_id: str
    public_key: str
    enrol_signature: bytes
    verify_key: VerifyKey

    @classmethod
    def parse(cls, body: Any) -> Registration:
        try:
            name, node_id, public_key = str(body["name"]), str(body["node_id"]), str(body["public_key"])
            enrol_signature, signature = bytes.fromhex(str(body["enrol_signature"])), bytes.fromhex(str(body["signature"]))
            verify = VerifyKey(bytes.fromhex(public_key))
            verify.verify(enrolment_proof(name, node_id, public_key), signature)
        except Exception:
            raise EnrolmentRefused(REFUSED) from None
        return cls(name, node_id, public_key, enrol_signature, verify)

    def proves(self, enrol_key: str | None) -> bool:
        """Whether the request was signed by the key the enrolment secret behind ``enrol_key`` seeds."""
        # A node with no enrolment key is checked against a fixed key, so that both take as long.
        key = VerifyKey(bytes.fromhex(enrol_key)) if enrol_key else _NO_KEY
        try:
            key.verify(enrolment_proof(self.name, self.node_id, self.public_key), self.enrol_signature)
        except (BadSignatureError, ValueError):
            return False
        return enrol_key is not None


_NO_KEY = SigningKey(bytes(32)).verify_key


@dataclass(frozen=True, slots=True)
class Enrolment:
    """The content of an enrolment file."""

    name: str
    node_number: int
    country: str
    region: str
    regions: list[str]
    hub_url: str
    hub_node_id: str
    hub_public_key: str
    secret: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mpi_enrolment": FORMAT,
            "name": self.name,
            "node_number": self.node_number,
            "country": self.country,
            "region": self.region,
            "regions": self.regions,
            "hub_url": self.hub_url,
            "hub_node_id": self.hub_node_id,
            "hub_public_key": self.hub_public_key,
            "secret": self.secret,
        }

    @classmethod
    def from_json(cls, data: Any) -> Enrolment:
        try:
            if data.get("mpi_enrolment") == 1:
                raise ValueError("this file was written by a hub before enrolment keys (format 1): "
                                 "ask the hub for a new one (mpi-hub node enroll again for this name)")
            if data.get("mpi_enrolment") != FORMAT:
                raise ValueError("not an enrolment file")
            return cls(
                str(data["name"]), int(data["node_number"]), str(data["country"]), str(data["region"]),
                [str(r) for r in data["regions"]], str(data["hub_url"]), str(data["hub_node_id"]),
                str(data["hub_public_key"]), str(data["secret"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid enrolment file: {exc}") from None


async def reserve(store: Store, hub_key: SigningKey, name: str, region: str, hub_url: str, subscribe: list[str], *,
                  again: bool = False, replaces: str | None = None) -> Enrolment:
    """Reserve a node number and a one-time secret for a node to come.

    The hub keeps only the public half of the key pair the secret seeds. ``again`` writes a
    new file for a name still pending, with the same number: the old file stops working.
    ``replaces``: the node is a lost node's replacement, which in the same transaction is
    revoked and hands over its regions (the caller gives them) and holdings.
    """
    secret = secrets.token_urlsafe(24)
    enrol_key = bytes(enrolment_key(secret).verify_key).hex()
    regions = [region, *[r for r in subscribe if r != region]]
    async with store.write("cli:enrol") as tx:
        if replaces is not None:
            await _hand_over(tx, replaces, name)
        existing = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).first()
        if existing is not None and (existing.status != "pending" or not again):
            hint = " (pending: --again writes a new file)" if existing.status == "pending" else ""
            raise ValueError(f"a node named {name} is enrolled already{hint}")
        if existing is None and again:
            raise ValueError(f"no pending node named {name}: --again is for a node enrolled but not registered")
        if existing is not None:
            number = int(existing.node_number)
            await tx.conn.execute(
                sa.update(t.sync_node).where(t.sync_node.c.name == name)
                .values(region=region, regions=json.dumps(regions), enrol_key=enrol_key)
            )
        else:
            taken = set((await tx.conn.execute(sa.select(t.sync_node.c.node_number))).scalars())
            found = next((n for n in range(1, MAX_NODE_NUMBER) if n not in taken), None)
            if found is None:
                raise ValueError("every node number is taken")
            number = found
            await tx.conn.execute(
                sa.insert(t.sync_node).values(
                    name=name, node_number=number, region=region, regions=json.dumps(regions), status="pending",
                    enrol_key=enrol_key, created_at=tx.now, replaces=replaces,
                )
            )
        tx.audit("node_enrol", None, name=name, node_number=number, regions=regions, again=existing is not None,
                 replaces=replaces)
    return Enrolment(
        name, number, store.meta.get("country", ""), region, regions, hub_url, store.node_id,
        bytes(hub_key.verify_key).hex(), secret,
    )

async def _hand_over(tx: Any, lost: str, successor: str) -> None:
    """Revoke node ``lost`` (its keys sign nothing more) and give its holdings to ``successor``.

    The successor's number is a new one (``reserve`` takes a number no row ever had, and rows
    are never deleted), so no ID it mints can be one the lost node minted, even offline.
    """
    node = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == lost))).first()
    if node is None:
        raise ValueError(f"no node named {lost}")
    if node.status == "pending":
        raise ValueError(f"node {lost} never registered: enrol it again (mpi-hub node enroll --again)")
    taken = (await tx.conn.execute(sa.select(t.sync_node.c.name).where(t.sync_node.c.replaces == lost))).first()
    if taken is not None:
        raise ValueError(f"node {lost} is replaced already, by {taken.name}")
    await tx.conn.execute(sa.update(t.sync_node).where(t.sync_node.c.name == lost).values(status="revoked"))
    await tx.conn.execute(
        sa.update(t.sync_key)
        .where(t.sync_key.c.node_name == lost, t.sync_key.c.status != "revoked")
        .values(status="revoked", last_seq=sa.func.coalesce(t.sync_key.c.last_seq, node.acked_seq))
    )
    held = t.sync_holding
    await tx.conn.execute(
        sa.insert(held).from_select(
            ["node_name", "mpi_id", "since"],
            sa.select(sa.literal(successor), held.c.mpi_id, sa.literal(tx.now)).where(held.c.node_name == lost),
        )
    )
    tx.audit("node_revoke", None, name=lost, acked_seq=node.acked_seq, replaced_by=successor)


async def register(store: Store, body: Any) -> dict[str, Any]:
    """A node presents its key, signed with it and with the key its enrolment secret seeds.

    Every refusal is the same ``EnrolmentRefused``, whether the name is unknown, the
    signature wrong, the enrolment used or revoked: the answer tells nothing of which
    names exist. The request is checked against a read first; only a proven one takes
    the write lock (where it is checked again).
    """
    request = Registration.parse(body)
    name, node_id, public_key = request.name, request.node_id, request.public_key
    kid = key_id(request.verify_key)
    async with store.read() as conn:
        node = (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).first()
    if not request.proves(node.enrol_key if node is not None else None) or node is None or node.status == "revoked":
        raise EnrolmentRefused(REFUSED)
    async with store.write(f"node:{name}") as tx:
        node = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).one()
        if not request.proves(node.enrol_key):  # a new file (--again) was written in between
            raise EnrolmentRefused(REFUSED)
        if node.status != "pending":
            known = (
                await tx.conn.execute(sa.select(t.sync_key.c.key_id).where(t.sync_key.c.key_id == kid))
            ).first()
            if node.status != "revoked" and node.node_id == node_id and known is not None:
                return _registered(node)  # the answer was lost: say it again
            raise EnrolmentRefused(REFUSED)
        # A node id or a key some node has already: refused, not a constraint's 500.
        taken = (await tx.conn.execute(sa.select(t.sync_node.c.name).where(t.sync_node.c.node_id == node_id))).first()
        known = (await tx.conn.execute(sa.select(t.sync_key.c.key_id).where(t.sync_key.c.key_id == kid))).first()
        if taken is not None or known is not None:
            raise EnrolmentRefused(REFUSED)
        await tx.conn.execute(
            sa.update(t.sync_node)
            .where(t.sync_node.c.name == name)
            .values(node_id=node_id, status="active", seen_at=tx.now)
        )
        await tx.conn.execute(
            sa.insert(t.sync_key).values(
                key_id=kid, node_name=name, public_key=public_key, status="active", first_seq=1, created_at=tx.now
            )
        )
        tx.audit("node_register", None, name=name, node_id=node_id, key_id=kid)
        node = (await tx.conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).one()
    return _registered(node)


def _registered(node: Any) -> dict[str, Any]:
    return {"name": node.name, "node_number": node.node_number, "status": node.status,
            "regions": json.loads(node.regions), "acked_seq": node.acked_seq}


async def enrol(store: Store, enrolment: Enrolment, public_key: str | None = None) -> None:
    """Node side: take the node number and the hub's key from an enrolment file, and sign this
    node's key (``public_key``, hex; default: the one in node_meta) with the secret's key. The
    signature is kept until registered; the secret is not kept."""
    meta = store.meta
    public_key = public_key or meta.get("public_key")
    if not public_key:
        raise ValueError("this node has no public key recorded: give the key of its key file")
    if "hub_public_key" in meta:
        raise ValueError("this node is enrolled already")
    if enrolment.country != meta.get("country"):
        raise ValueError(f"the enrolment is for country {enrolment.country}, this node is {meta.get('country')}")
    if enrolment.region != meta.get("region"):
        raise ValueError(f"the enrolment is for region {enrolment.region}, this node is {meta.get('region')}")
    if store.counter > 0 and store.node_number == 0:
        # Node number 0 is every standalone node's: two enrolled node-0 databases could hold the same IDs.
        raise ValueError(
            f"this standalone node (number 0) has minted {store.counter} ID(s): only an empty node can be enrolled"
        )
    async with store.write("cli:enrol") as tx:
        await put_meta(
            tx,
            {
                "node_number": str(enrolment.node_number),
                "hub_url": enrolment.hub_url,
                "hub_node_id": enrolment.hub_node_id,
                "hub_public_key": enrolment.hub_public_key,
                "sync_name": enrolment.name,
                "sync_regions": json.dumps(enrolment.regions),
                # Only the secret's signature of this node's name, id and key is kept, until the hub has the key.
                "sync_enrol_proof": enrolment_key(enrolment.secret).sign(
                    enrolment_proof(enrolment.name, store.node_id, public_key)
                ).signature.hex(),
                "sync_registered": "0",
            },
        )
        tx.audit("node_enrolled", None, name=enrolment.name, node_number=enrolment.node_number)
    store.node_number = enrolment.node_number
