"""The state of a room where branches of its graph meet.

Spec: ``server-server-api.md`` "Room State Resolution": the state before an
event with several prev_events, and the current state of a room with several
forward extremities, are the resolution of the states after each of them
(``federation.state_res``).
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.room_versions import RoomVersion
from federation.state_res.resolve import resolve_state
from storage.database import Transaction
from storage.stores.events import EventStore, StoreStateResolutionView
from storage.stores.state import ResolvedState

__all__ = ["state_after_events_txn", "update_current_state_txn"]


async def state_after_events_txn(
    txn: Transaction,
    events: EventStore,
    tenant: str,
    rv: RoomVersion,
    event_ids: Sequence[str],
) -> ResolvedState | None:
    """The state after ``event_ids`` together: resolved across them if they differ.

    ``None`` if any of them is unknown or an outlier (its state is not known).
    """
    groups: list[int | None] = []
    for eid in event_ids:
        g = await events.get_state_groups_for_event(tenant, eid, txn=txn)
        if g is None:
            return None
        groups.append(g[1])
    distinct = list(dict.fromkeys(groups))
    if len(distinct) == 1:
        only = distinct[0]
        state = await events.state.get_state_group(tenant, only, txn=txn)
        return ResolvedState(state, group=only)
    state_sets = [await events.state.get_state_group(tenant, g, txn=txn) for g in distinct]
    view = StoreStateResolutionView(events, tenant, txn)
    resolved = await resolve_state(rv, state_sets, view)
    # Delta against the largest input: usually the closest to the result.
    nearest = max(
        (g for g in distinct if g is not None),
        key=lambda g: len(state_sets[distinct.index(g)]),
        default=None,
    )
    return ResolvedState(resolved, predecessor=nearest)


async def update_current_state_txn(
    txn: Transaction, events: EventStore, tenant: str, room_id: str, rv: RoomVersion
) -> int | None:
    """Set the room's current state to the state across its forward extremities.

    Spec: "Soft failure" defines the current state as "the resolved state
    across all forward extremities".
    """
    extremities = await events.get_forward_extremities(tenant, room_id, txn=txn)
    if not extremities:
        return await events.state.get_current_state_group(tenant, room_id, txn=txn)
    state = await state_after_events_txn(txn, events, tenant, rv, extremities)
    if state is None:
        raise RuntimeError(f"a forward extremity of {room_id} has no known state")
    group = await events.state.store_state_txn(txn, tenant, room_id, state)
    await events.state.set_current_state_group_txn(
        txn, tenant, room_id, rv.identifier, group, state=state.state
    )
    return group
