"""The hub's storage: PostgreSQL through psycopg 3, and its signing key sealed in it (``shared/stores.py``)."""

from __future__ import annotations

from shared.stores import hub_signing_key, hub_store

__all__ = ["hub_signing_key", "hub_store"]
