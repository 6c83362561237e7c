"""The review queue: pairs and edits a person must decide.

- ``items``: writing review items and ``not_same`` decisions (every writer goes through it)
- ``queue``: listing the queue and deciding an item (``GET /review``, ``POST /review/{id}/decision``)

This package's ``__init__`` imports nothing: ``queue`` needs the registry, which writes items.
"""

__all__: list[str] = []
