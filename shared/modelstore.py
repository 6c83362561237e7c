"""Matcher models kept in the database: which one scores here, and swapping it while serving.

Owns: the ``matcher_model`` table (the model files this replica holds, each with its SHA-256),
the current model's version (``node_meta['matcher_model']``; absent: the model shipped in the
package, ``shared/matching/matcher_model.npz``, which is always held), and ``refresh``, which
makes a running matcher score with the current model.

The hub's current model is set by ``mpi-hub model train`` (an accepted model) and ``mpi-hub
model use``; a node's by sync (``shared.sync.modelsync``), which checks the hub's signature and
the file's hash before anything is stored. A file is loaded (``LearnedModel.load``: the feature
list must be the one this code computes) before it becomes current, so a replica never points
at a model it cannot load; a model that will not load is refused and the old one keeps scoring.

The swap is one attribute assignment on the matcher (``LearnedMatcher.model``): a request being
scored finishes with the model it started with (scoring does not await), the next one uses the
new one, and the API keeps serving.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .matching import LearnedMatcher, LearnedModel, Matcher
from .matching.learned import MODEL_FILE
from .storage import schema as t
from .storage.store import Store, Tx

__all__ = [
    "CURRENT_KEY",
    "ModelRef",
    "current",
    "list_models",
    "load_bytes",
    "model_data",
    "refresh",
    "running_version",
    "save_model",
    "set_current",
    "sha256_of",
    "shipped",
]

log = logging.getLogger("mpi.model")

CURRENT_KEY = "matcher_model"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model by version and the SHA-256 of its file."""

    version: str
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_bytes(data: bytes) -> LearnedModel:
    """A model from a file's bytes (ValueError, or numpy's own errors, when it is not one this code can use)."""
    return LearnedModel.load(io.BytesIO(data))


@lru_cache(maxsize=1)
def _shipped() -> tuple[ModelRef, bytes]:
    data = resources.files("shared.matching").joinpath(MODEL_FILE).read_bytes()
    return ModelRef(load_bytes(data).version, sha256_of(data)), data


def shipped() -> ModelRef:
    """The model shipped in the package: every replica holds it."""
    return _shipped()[0]


def running_version(matcher: Matcher) -> str:
    """The version a matcher scores with (``fellegi-sunter`` for the older scorer)."""
    return matcher.model.version if isinstance(matcher, LearnedMatcher) else "fellegi-sunter"


async def _named(conn: AsyncConnection) -> str | None:
    """The version ``node_meta`` names as current, if any."""
    value = (await conn.execute(sa.select(t.node_meta.c.value).where(t.node_meta.c.key == CURRENT_KEY))).scalar()
    return None if value is None else str(value)


async def current(conn: AsyncConnection) -> ModelRef:
    """The model this database says scores here (none named: the shipped one)."""
    version = await _named(conn)
    if version is None or version == shipped().version:
        return shipped()
    sha = (await conn.execute(sa.select(t.matcher_model.c.sha256).where(t.matcher_model.c.version == version))).scalar()
    if sha is None:  # cannot happen through this module: the pointer is set with the row
        log.error("the current model %s is not in matcher_model: the shipped model scores", version)
        return shipped()
    return ModelRef(version, str(sha))


async def model_data(conn: AsyncConnection, version: str) -> bytes | None:
    """The file of a model this database holds (the shipped one included), or None."""
    if version == shipped().version:
        return _shipped()[1]
    data = (await conn.execute(sa.select(t.matcher_model.c.data).where(t.matcher_model.c.version == version))).scalar()
    return bytes(data) if data is not None else None


async def save_model(tx: Tx, data: bytes, meta: dict[str, Any], *, make_current: bool) -> ModelRef:
    """Keep a model file (checked loadable); make it the current one if asked. Idempotent per version."""
    model = load_bytes(data)
    ref = ModelRef(model.version, sha256_of(data))
    held = (
        await tx.conn.execute(sa.select(t.matcher_model.c.sha256).where(t.matcher_model.c.version == ref.version))
    ).scalar()
    if held is not None and held != ref.sha256:
        raise ValueError(f"another file is held already as model {ref.version}")
    if held is None and ref.version != shipped().version:
        await tx.conn.execute(
            sa.insert(t.matcher_model).values(
                version=ref.version, sha256=ref.sha256, data=data, meta=json.dumps(meta, sort_keys=True),
                created_at=tx.now, created_by=tx.actor,
            )
        )
    if make_current:
        await set_current(tx, ref.version)
    return ref


async def set_current(tx: Tx, version: str) -> None:
    """Make a held model the current one (LookupError when it is not held)."""
    if version != shipped().version:
        held = (await tx.conn.execute(sa.select(t.matcher_model.c.version).where(t.matcher_model.c.version == version))).scalar()
        if held is None:
            raise LookupError(f"no model {version} is held here")
    await tx.conn.execute(sa.delete(t.node_meta).where(t.node_meta.c.key == CURRENT_KEY))
    await tx.conn.execute(sa.insert(t.node_meta).values(key=CURRENT_KEY, value=version))
    tx.audit("model_use", None, version=version)
    meta = tx._store.meta
    tx.after_commit.append(lambda: meta.update({CURRENT_KEY: version}))


async def list_models(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every model held (the shipped one first), oldest first, with which one is current."""
    now = await current(conn)
    m = t.matcher_model
    rows = (await conn.execute(sa.select(m.c.version, m.c.sha256, m.c.meta, m.c.created_at, m.c.created_by)
                               .order_by(m.c.created_at, m.c.version))).all()
    base = shipped()
    out = [{"version": base.version, "sha256": base.sha256, "created_at": None, "created_by": "package",
            "current": now.version == base.version, "held_out": None}]
    for r in rows:
        meta = json.loads(r.meta or "{}")
        out.append({"version": r.version, "sha256": r.sha256, "created_at": r.created_at, "created_by": r.created_by,
                    "current": r.version == now.version, "held_out": meta.get("held_out")})
    return out


async def refresh(store: Store, matcher: Matcher) -> str:
    """Make ``matcher`` score with this database's current model; returns the version it scores with.

    Cheap when nothing changed (one read of ``node_meta``). A database that names no model
    leaves the matcher as it was built (the shipped model, or one a script gave it). A model
    that cannot be loaded is logged and the running one keeps scoring.
    """
    if not isinstance(matcher, LearnedMatcher):
        return running_version(matcher)
    async with store.read() as conn:
        named = await _named(conn)
        if named is None or named == matcher.model.version:
            return matcher.model.version
        ref = await current(conn)
        data = await model_data(conn, ref.version)
    try:
        if data is None or sha256_of(data) != ref.sha256:
            raise ValueError("its file is missing or does not match its hash")
        model = load_bytes(data)
    except Exception as exc:  # a model that cannot score must not stop the server
        log.error("model %s cannot be loaded (%s): %s keeps scoring", ref.version, exc, matcher.model.version)
        return matcher.model.version
    previous, matcher.model = matcher.model.version, model
    log.info("matcher model %s replaces %s", model.version, previous)
    return model.version
