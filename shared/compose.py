"""The composition root: every process builds its services here, and only here.

The API (``build_app``), every command of ``mpi-node`` and ``mpi-hub``, the dedup workers,
bulk import and the benchmark scripts get their store, name frequencies, matcher, registry
and cards from ``services(settings, role)`` (or, for a process that serves, ``compose`` and
``Services.open``/``close`` in the app's lifetime). A role's extras come with them:

- hub: ``hub_sync`` (its change hook feeds the nodes every write of the hub, whoever makes
  it: API, import, dedup), ``dedup`` and its ``runner`` (one pass at a time per process);
- node: ``node_sync`` (the node's key ring and its sync rounds).

The name frequencies are read once per process, when the services open (``frequencies=False``
for a command that neither matches nor searches: a bulk load, a key command).

The matcher can be swapped while the process runs: ``services.matcher = new`` sets
``registry.matcher``, which every user (register, match, bulk import, dedup, review,
console) reads at each call, never keeps. A new matcher must score with this process's
name counts: build it with ``matcher_for(settings, services.frequencies, ...)`` or pass
``services.frequencies`` to its constructor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .cards import Cards
from .dedup import Dedup
from .dedup_runner import DedupRunner
from .matching import Matcher, NameFrequencies, Thresholds, matcher_of
from .registry import Registry
from .settings import Settings
from .storage.store import Store
from .stores import ROLES, hub_signing_key, load_keys, store_of
from .sync.hub import HubSync
from .sync.node import NodeSync

__all__ = ["Services", "compose", "matcher_for", "registry_of", "services"]


def matcher_for(settings: Settings, frequencies: NameFrequencies) -> Matcher:
    """The scorer the settings name (``MPI_MATCHER``), with their thresholds, over ``frequencies``."""
    thresholds = Thresholds(settings.certain_threshold, settings.probable_threshold, settings.possible_threshold)
    return matcher_of(settings.matcher, frequencies, thresholds)


def registry_of(store: Store, settings: Settings) -> Registry:
    """A registry over ``store`` with its own name frequencies (empty until loaded) and the settings' matcher.

    For what builds its store itself (a benchmark's scratch database, a test); a process of a
    role takes ``services`` instead.
    """
    frequencies = NameFrequencies()
    return Registry(store, matcher_for(settings, frequencies), frequencies, settings.candidate_limit)


@dataclass(eq=False)
class Services:
    """What one process works with, built once (``compose``) and opened once (``open``)."""

    settings: Settings
    role: str
    store: Store
    registry: Registry
    cards: Cards
    hub_sync: HubSync | None = None
    node_sync: NodeSync | None = None
    dedup: Dedup | None = None
    runner: DedupRunner | None = None
    migrated: list[str] = field(default_factory=list)

    @property
    def frequencies(self) -> NameFrequencies:
        return self.registry.frequencies

    @property
    def matcher(self) -> Matcher:
        return self.registry.matcher

    @matcher.setter
    def matcher(self, matcher: Matcher) -> None:
        """Score with ``matcher`` from the next call on (a model received through sync, a retrained one)."""
        if matcher.frequencies is not self.registry.frequencies:
            raise ValueError("a matcher for this process must count names with services.frequencies")
        self.registry.matcher = matcher

    async def open(self, *, migrate: bool = True, state: bool = True, frequencies: bool = True,
                   sign: bool = True) -> None:
        """Connect; bring the schema up to date (``migrate``; with ``state`` too, the read-audit flusher
        starts, as a server's does); read the node's state, (hub, ``sign``) open its signing key, and read
        the name frequencies. What ``migrate`` applied is in ``migrated``.
        """
        if migrate and state:
            await self.store.open()
        else:
            await self.store.connect()
            if migrate:
                self.migrated = await self.store.migrate()
            if state:
                await self.store.load_state()
        if self.hub_sync is not None and sign:
            self.hub_sync.start(hub_signing_key(self.store.meta, self.settings))
        if frequencies:
            await self.registry.load_frequencies()

    async def close(self) -> None:
        if hasattr(self.store, "writer"):  # connected
            await self.store.close()


def compose(settings: Settings, role: str, *, store: Store | None = None, extras: bool = True,
            dedup_actor: str = "dedup") -> Services:
    """Build (without any I/O) the services of a ``role`` process: "node" or "hub".

    ``store``: one built already (a test's); by default the role's own (``stores.store_of``).
    ``extras=False``: the shared services alone, without the role's sync and dedup.
    ``dedup_actor``: the name the hub's dedup writes under in the audit log (a worker's own).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: {' or '.join(ROLES)}")
    store = store if store is not None else store_of(settings, role)
    registry = registry_of(store, settings)
    out = Services(settings, role, store, registry, Cards(registry, settings))
    if not extras:
        return out
    if role == "hub":
        out.hub_sync = HubSync(store, registry, max_skew_seconds=settings.max_clock_skew_seconds)
        out.dedup = Dedup(registry, auto_merge=settings.auto_merge_threshold, actor=dedup_actor)
        out.runner = DedupRunner(out.dedup)
    else:
        out.node_sync = NodeSync(store, registry, load_keys(settings.data_dir),
                                 batch_max=settings.sync_batch_max, request_seconds=settings.sync_request_seconds)
    return out


@contextlib.asynccontextmanager
async def services(
    settings: Settings,
    role: str,
    *,
    store: Store | None = None,
    migrate: bool = True,
    state: bool = True,
    frequencies: bool = True,
    sign: bool = True,
    dedup_actor: str = "dedup",
) -> AsyncIterator[Services]:
    """The services of a ``role`` process, open for the block and closed after it (see ``Services.open``)."""
    built = compose(settings, role, store=store, dedup_actor=dedup_actor)
    try:
        await built.open(migrate=migrate, state=state, frequencies=frequencies, sign=sign)
        yield built
    finally:
        await built.close()
