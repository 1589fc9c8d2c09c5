"""State resolution v2 (room versions 10, 11) and v2.1 (room version 12).

Spec: ``rooms/fragments/v2-state-res.md``, ``rooms/v12.md`` "State
resolution", ``server-server-api.md`` "Room State Resolution".

Public API::

    await resolve_state(room_version, state_sets, store, yield_every=100)

``store`` is a :class:`StateResolutionStore` (one method, ``get_events``);
:class:`InMemoryStateResStore` is a dict-backed one. A store may also be an
:class:`AuthChainDifferenceStore` to supply the auth difference itself.
"""

from federation.state_res.errors import StateResolutionError
from federation.state_res.resolve import resolve_state
from federation.state_res.store import (
    AuthChainDifferenceStore,
    InMemoryStateResStore,
    StateResolutionStore,
)

__all__ = [
    "AuthChainDifferenceStore",
    "InMemoryStateResStore",
    "StateResolutionError",
    "StateResolutionStore",
    "resolve_state",
]
