"""The matcher model travelling from hub to nodes, so every replica scores with the same version.

Every change set a node sends with a pull (``NodeSync.outgoing``) names the model the node
scores with (header ``model``). When the hub's current model differs, its reply carries one
more part, ``M``: a statement signed by the hub's key (the key the node pinned at enrolment)::

    b"MPM1" | canonical JSON {"version", "sha256", "size", "to", "hub"} | Ed25519 signature

An idle node whose model is current gets nothing more on the wire. The node checks the
signature and the addressee (``noticed``) and keeps the statement (``sync_model_wanted``);
after the round (``follow``) it takes the model from its own database if it holds that version
(a roll-back), otherwise it fetches the file with a signed request (``POST /sync/model``,
authenticated like a pull). The file is loaded only if its SHA-256 and size are the signed
ones and ``LearnedModel.load`` accepts it (the features it names are the ones this code
computes); then it is stored with its hash (``matcher_model``), made current in the same
transaction, and swapped into the running matcher (``modelstore.refresh``). Anything else is
refused: the old model keeps scoring, the reason is kept (``sync_model_error``, shown by
``/sync/status``) and the next round tries again. A node with no link keeps what it has; a
node restarted loads the current model from its database (``Registry.load_frequencies``).
Bundle files (USB sync) do not carry models: such a node takes the new model on its next
round over the network.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .. import modelstore
from ..matching import LearnedMatcher, Matcher
from .changelog import canonical_json
from .changeset import open_envelope, seal_changes
from .errors import BadEnvelope, BadSignature, SyncError
from .meta import put_meta
from .transports import Link

# ``hub`` is a ``HubSync`` and ``node`` a ``NodeSync`` below: typed Any, as importing either
# here would be a cycle (both call this module).

__all__ = ["ModelNotice", "fetch_request", "follow", "header", "model_file", "notice_for", "noticed", "open_notice",
           "seal_notice", "status"]

log = logging.getLogger("mpi.sync.model")

_MAGIC = b"MPM1"
_SIG = 64
WANTED, ERROR = "sync_model_wanted", "sync_model_error"
MAX_MODEL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelNotice:
    version: str
    sha256: str
    size: int
    to: str
    hub: str


def seal_notice(notice: ModelNotice, key: SigningKey) -> bytes:
    body = canonical_json({"version": notice.version, "sha256": notice.sha256, "size": notice.size,
                           "to": notice.to, "hub": notice.hub}).encode()
    unsigned = _MAGIC + body
    return unsigned + key.sign(unsigned).signature


def open_notice(raw: bytes, key: VerifyKey) -> ModelNotice:
    """A verified model statement (BadSignature if the hub did not sign it)."""
    if len(raw) < 4 + _SIG or raw[:4] != _MAGIC:
        raise BadEnvelope("not a model statement")
    try:
        key.verify(raw[:-_SIG], raw[-_SIG:])
    except (BadSignatureError, ValueError):
        raise BadSignature("the model statement's signature does not hold") from None
    try:
        v = json.loads(raw[4:-_SIG])
        return ModelNotice(str(v["version"]), str(v["sha256"]), int(v["size"]), str(v["to"]), str(v["hub"]))
    except (TypeError, ValueError, KeyError):
        raise BadEnvelope("the model statement is malformed") from None


# -- the hub -----------------------------------------------------------------------------------


async def notice_for(hub: Any, header: dict[str, Any], node: Any) -> bytes | None:
    """The signed statement of the hub's current model, for a node that scores with another one."""
    held = header.get("model")
    if not isinstance(held, str):
        return None  # a node that does not say (an older version, another scorer): nothing to follow
    async with hub.store.read() as conn:
        ref = await modelstore.current(conn)
        if ref.version == held:
            return None
        data = await modelstore.model_data(conn, ref.version)
    if data is None:
        return None
    if ref.version != modelstore.running_version(hub.registry.matcher):
        await modelstore.refresh(hub.store, hub.registry.matcher)  # the hub's own scorer follows `mpi-hub model`
    notice = ModelNotice(ref.version, ref.sha256, len(data), node.node_id or node.name, hub.store.node_id)
    return seal_notice(notice, hub.key)


async def model_file(hub: Any, raw: bytes) -> bytes:
    """POST /sync/model: the file of a model the hub holds, for a signed, fresh request naming its version."""
    env = open_envelope(raw)
    version = env.header.get("model_file")
    if env.count != 0 or not isinstance(version, str):
        raise BadEnvelope("a model request carries no changes and names model_file")
    await hub._authenticate(env)
    if not hub._fresh(env):
        raise BadEnvelope("the model request is stale or has no sent_at: check the node's clock")
    async with hub.store.read() as conn:
        data = await modelstore.model_data(conn, version)
    if data is None:
        raise SyncError(f"the hub holds no model {version}")
    return data


# -- the node ----------------------------------------------------------------------------------


def header(matcher: Matcher) -> dict[str, str]:
    """What a node's request says of its model (only a learned matcher follows the hub's)."""
    return {"model": matcher.model.version} if isinstance(matcher, LearnedMatcher) else {}


def status(node: Any) -> dict[str, Any]:
    """The model part of ``GET /sync/status``."""
    wanted = json.loads(node.meta[WANTED]) if node.meta.get(WANTED) else None
    return {"model": {"scoring": modelstore.running_version(node.registry.matcher),
                      "hub_names": wanted["version"] if wanted else None,
                      "error": node.meta.get(ERROR) or None}}


async def noticed(node: Any, raw: bytes) -> None:
    """Keep a verified statement of the hub's current model (fetched after the round)."""
    notice = open_notice(raw, node._hub_key())
    if notice.to not in (node.store.node_id, node.meta.get("sync_name")):
        raise BadEnvelope("this model statement is for another node")
    if notice.hub != node.meta.get("hub_node_id"):
        raise BadEnvelope("this model statement is not from this node's hub")
    value = json.dumps({"version": notice.version, "sha256": notice.sha256, "size": notice.size}, sort_keys=True)
    if node.meta.get(WANTED) != value:
        async with node.store.write("sync") as tx:
            await put_meta(tx, {WANTED: value})


def fetch_request(node: Any, version: str) -> bytes:
    """A signed request for a model file (no changes; like a pull, fresh for ten minutes)."""
    return seal_changes([], node.key, node_id=node.store.node_id, key_id=node.store.key_id,
                        next_seq=node.store.seq + 1, prev_hash=node.store.last_hash,
                        sent_at=int(time.time() * 1000), model_file=version)


async def follow(node: Any, link: Link) -> str | None:
    """After a round: make the model the hub named the one that scores here; returns what happened, if anything.

    Never raises: the round's data moved already, and the old model keeps scoring whatever goes wrong.
    """
    text = node.meta.get(WANTED)
    if not text:
        return None
    wanted = json.loads(text)
    version, sha, size = str(wanted["version"]), str(wanted["sha256"]), int(wanted["size"])
    matcher = node.registry.matcher
    if modelstore.running_version(matcher) == version:
        return None
    try:
        async with node.store.read() as conn:
            data = await modelstore.model_data(conn, version)
        if data is None:
            fetch = getattr(link, "model", None)
            if fetch is None:
                return None  # a file link: the next round over the network fetches it
            if size > MAX_MODEL_BYTES:
                raise ValueError(f"the hub announces {size} bytes, more than {MAX_MODEL_BYTES}")
            data = await fetch(fetch_request(node, version))
        if len(data) != size or modelstore.sha256_of(data) != sha:
            raise ValueError("the file's SHA-256 or size is not the one the hub signed (tampered or damaged)")
        loaded = modelstore.load_bytes(data)
        if loaded.version != version:
            raise ValueError(f"the file holds model {loaded.version}, not {version}")
        async with node.store.write("sync") as tx:
            await modelstore.save_model(tx, data, {"from": "hub"}, make_current=True)
            await put_meta(tx, {ERROR: ""})
    except Exception as exc:  # refused: keep scoring with the old model, say why, retry next round
        reason = f"model {version} refused: {exc}"
        log.warning("%s; %s keeps scoring", reason, modelstore.running_version(matcher))
        if node.meta.get(ERROR) != reason:
            async with node.store.write("sync") as tx:
                await put_meta(tx, {ERROR: reason})
        return reason
    now = await modelstore.refresh(node.store, matcher)
    log.info("this node now scores with model %s", now)
    return f"model {now}"
