"""Applying changes from other replicas (see ``applier``), under a role's policy (``policy``).

- ``changes``: ``Remote`` (a change to apply) and ``Route`` (where the hub sends it on)
- ``policy``: ``NodePolicy`` and ``HubPolicy``, what each role adds to applying a change
- ``applier``: the ``Applier``, which decides whether and where a change applies and calls
  the identity layer (``shared.identities``) to apply it
"""

from .applier import Applier
from .changes import FollowUp, Remote, Route
from .policy import HubPolicy, NodePolicy, RolePolicy

__all__ = ["Applier", "FollowUp", "HubPolicy", "NodePolicy", "Remote", "RolePolicy", "Route"]
