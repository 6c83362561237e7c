"""Applying changes from other replicas (see ``applier``), under a role's policy (``policy``).

- ``changes``: ``Remote`` (a change to apply) and ``Route`` (where the hub sends it on)
- ``policy``: ``NodePolicy`` and ``HubPolicy``, what each role adds to applying a change, and
  ``NodeAuthority``, what a pushing node may change (the hub asks it before each change)
- ``applier``: the ``Applier``, which decides whether and where a change applies and calls
  the identity layer (``shared.identities``) to apply it
"""

from .applier import Applier
from .changes import FollowUp, Remote, Route
from .policy import NOT_AUTHORISED, HubPolicy, NodeAuthority, NodePolicy, RolePolicy

__all__ = ["NOT_AUTHORISED", "Applier", "FollowUp", "HubPolicy", "NodeAuthority", "NodePolicy", "Remote", "RolePolicy",
           "Route"]
