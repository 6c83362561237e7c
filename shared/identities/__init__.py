"""The identity layer: every write to the identity tables, whoever makes it, goes through here.

API handlers (through ``shared.registry``), bulk import, the hub's dedup and the sync
applier all call these operations; the applier only decides whether and in which order a
remote change applies. Modules:

- ``fields``: the demographic fields, their clocks, value forms, ``Found``
- ``lookup``: reading an identity by ID (merges followed, one statement) or key
- ``views``: the API's view of an identity (one, or a page: every face answers it), and the snapshot sync sends
- ``index``: search tokens and blocking keys (one function for every writer), name counts
- ``register``: creating identities, here or from another replica
- ``search``: GET /mpi/search, and the FHIR Patient search (``people``)
- ``edit``: fields, external ids, programmes
- ``cards``: cards and the PII-free card status
- ``merge``: the local merge and the merge groups (union-find)
- ``unmerge``: undoing a merge
- ``evict``: forgetting an identity that left a node's scope
"""

from .fields import DEMOGRAPHIC, REVIEWED, Clock, Found, Row, api_time, check_id, clock_of, stamp
from .lookup import find, find_whole, row_of
from .views import snapshot, view

__all__ = [
    "DEMOGRAPHIC",
    "REVIEWED",
    "Clock",
    "Found",
    "Row",
    "api_time",
    "check_id",
    "clock_of",
    "find",
    "find_whole",
    "row_of",
    "snapshot",
    "stamp",
    "view",
]
