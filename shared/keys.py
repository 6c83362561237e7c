"""Typed keys under which the app keeps its dependencies (no module-level singletons)."""

from __future__ import annotations

from aiohttp import web

from .auth import Auth
from .cards import Cards
from .compose import Services
from .dedup_runner import DedupRunner
from .registry import Registry
from .settings import Settings
from .storage.store import Store
from .sync.hub import HubSync
from .sync.node import NodeSync

__all__ = [
    "auth_key", "cards_key", "dedup_runner_key", "hub_sync_key", "node_sync_key", "registry_key", "services_key", "settings_key", "store_key",
]

settings_key = web.AppKey("settings", Settings)
store_key = web.AppKey("store", Store)
registry_key = web.AppKey("registry", Registry)
cards_key = web.AppKey("cards", Cards)
auth_key = web.AppKey("auth", Auth)
hub_sync_key = web.AppKey("hub_sync", HubSync)
node_sync_key = web.AppKey("node_sync", NodeSync)
dedup_runner_key = web.AppKey("dedup_runner", DedupRunner)
services_key = web.AppKey("services", Services)
