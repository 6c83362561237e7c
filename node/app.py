"""The node application: the shared API on the node's SQLite store."""

from __future__ import annotations

from aiohttp import web

from shared.app import build_app
from shared.settings import Settings

from .storage import node_store

__all__ = ["create_app"]


def create_app(settings: Settings) -> web.Application:
    return build_app(settings, node_store(settings), role="node")
