"""Enrolment: how a node gets its number and the hub's key, and registers its own key.

At the hub, ``mpi-hub node enroll`` reserves a node number and a one-time secret and writes
an enrolment file (``Enrolment``, mode 0600). The node takes the file (``enrol``) and then
registers its public key (``registration_request``): the request carries the node's name, id
and public key, signed with that key (it holds the private half) and MACed with a key
derived from the secret (it was given the file). **The secret itself never travels**: not
over HTTP, not in a bundle file, so whoever copies a request or a bundle cannot enrol a key
of their own. The hub keeps only the derived MAC key (``secret_digest``), until the
registration uses it up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from ..storage.store import Store
from .changelog import canonical_json
from .errors import EnrolmentRefused
from .meta import put_meta

__all__ = ["Enrolment", "Registration", "enrol", "enrolment_proof", "registration_request", "secret_digest"]


def secret_digest(secret: str) -> str:
    """The MAC key derived from a one-time secret: all the hub and the node keep of it."""
    return hashlib.sha256(b"mpi-enrol-secret\x00" + secret.encode()).hexdigest()


def enrolment_proof(name: str, node_id: str, public_key: str) -> bytes:
    """What a registration signs and MACs: this node name, this node id, this key."""
    return canonical_json(["mpi-enrol", name, node_id, public_key]).encode()


def _mac(digest: str, proof: bytes) -> str:
    return hmac.new(bytes.fromhex(digest), proof, hashlib.sha256).hexdigest()


def registration_request(name: str, node_id: str, key: SigningKey, digest: str) -> dict[str, Any]:
    """The node's registration: its key, signed by that key and MACed with the secret's digest."""
    public = bytes(key.verify_key).hex()
    proof = enrolment_proof(name, node_id, public)
    return {"name": name, "node_id": node_id, "public_key": public, "mac": _mac(digest, proof),
            "signature": key.sign(proof).signature.hex()}


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration request whose signature holds (its MAC is checked against the hub's digest)."""

    name: str
    node_id: str
    public_key: str
    mac: str
    verify_key: VerifyKey

    @classmethod
    def parse(cls, body: Any) -> Registration:
        try:
            name, node_id, public_key = str(body["name"]), str(body["node_id"]), str(body["public_key"])
            mac, signature = str(body["mac"]), bytes.fromhex(str(body["signature"]))
            verify = VerifyKey(bytes.fromhex(public_key))
            verify.verify(enrolment_proof(name, node_id, public_key), signature)
        except Exception:
            raise EnrolmentRefused("the enrolment request is malformed or its signature does not hold") from None
        return cls(name, node_id, public_key, mac, verify)

    def proves(self, digest: str | None) -> bool:
        """Whether the request was made by someone holding the secret behind ``digest``."""
        if not digest:
            return False
        expected = _mac(digest, enrolment_proof(self.name, self.node_id, self.public_key))
        return hmac.compare_digest(expected, self.mac)


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
            "mpi_enrolment": 1,
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
            if data.get("mpi_enrolment") != 1:
                raise ValueError("not an enrolment file")
            return cls(
                str(data["name"]), int(data["node_number"]), str(data["country"]), str(data["region"]),
                [str(r) for r in data["regions"]], str(data["hub_url"]), str(data["hub_node_id"]),
                str(data["hub_public_key"]), str(data["secret"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid enrolment file: {exc}") from None


async def enrol(store: Store, enrolment: Enrolment) -> None:
    """Node side: take the node number and the hub's key from an enrolment file."""
    meta = store.meta
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
                # Only the MAC key derived from the secret is kept, until the hub has the node's key.
                "sync_enrol_key": secret_digest(enrolment.secret),
                "sync_registered": "0",
            },
        )
        tx.audit("node_enrolled", None, name=enrolment.name, node_number=enrolment.node_number)
    store.node_number = enrolment.node_number
