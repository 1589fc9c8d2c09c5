"""State resolution v2 and v2.1: the algorithm.

Spec: ``rooms/fragments/v2-state-res.md`` "Algorithm", "Iterative auth checks"
and "Rejected events" (room versions 10 and 11), with the changes of
``rooms/v12.md`` "State resolution" (v2.1: the full conflicted set also holds
the conflicted state subgraph, and step 2 starts from the *empty* state map
rather than the unconflicted one). ``server-server-api.md`` "Room State
Resolution" says when it runs: wherever branches of the event graph merge.

The result depends only on the state sets and the events, never on the order
either arrives in: every choice is a sort whose last key is the event ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from federation.auth_rules import AuthError, auth_types_for_event, check_auth
from federation.events import Event
from federation.room_versions import RoomVersion, StateResAlgorithm
from federation.state_res._loop import Ticker
from federation.state_res.errors import StateResolutionError
from federation.state_res.graph import (
    StateKey,
    StateMap,
    auth_chain_difference,
    conflicted_subgraph,
    separate,
)
from federation.state_res.ordering import (
    CREATE,
    POWER_LEVELS,
    auth_event_ids_with_create,
    implied_create_event_id,
    is_power_event,
    mainline_order,
    reverse_topological_power_order,
)
from federation.state_res.store import (
    AuthChainDifferenceStore,
    EventCache,
    StateResolutionStore,
)


async def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    store: StateResolutionStore,
    *,
    yield_every: int = 100,
) -> dict[StateKey, str]:
    """The resolution of ``state_sets``: one ``(type, state_key) -> event_id`` map.

    Spec, ``rooms/fragments/v2-state-res.md`` "Algorithm" (v2.1 per
    ``rooms/v12.md``), chosen by ``room_version.state_res``. Yields to the event
    loop every ``yield_every`` iterations so a large resolution does not starve
    other work. Raises :class:`StateResolutionError` if a conflicted event is
    unknown to ``store`` or belongs to another room.
    """
    ticker = Ticker(yield_every)
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted

    cache = EventCache(store)
    full_conflicted = await full_conflicted_set(room_version, state_sets, cache, store, ticker)
    events = {eid: _known(cache, eid) for eid in full_conflicted}
    # Auth events are needed for the sender's power (step 1) and as the
    # fallback of the iterative auth checks; fetch them in one go.
    auth_ids = {aid for ev in events.values() for aid in auth_event_ids_with_create(ev)}
    await cache.fetch(auth_ids)
    _check_one_room([*events.values(), *(e for a in auth_ids if (e := cache.get(a)))])

    # Step 1.
    power = sorted(eid for eid, ev in events.items() if is_power_event(ev))
    sorted_power = await reverse_topological_power_order(power, full_conflicted, cache, ticker)

    # Step 2: v2 starts from the unconflicted state map, v2.1 from nothing.
    base: dict[StateKey, str] = (
        {} if room_version.state_res is StateResAlgorithm.V2_1 else dict(unconflicted)
    )
    partial = await iterative_auth_checks(room_version, base, sorted_power, cache, ticker)

    # Step 3.
    picked = set(sorted_power)
    rest = [eid for eid in full_conflicted if eid not in picked]
    sorted_rest = await mainline_order(rest, partial.get(POWER_LEVELS), cache, ticker)

    # Step 4.
    resolved = await iterative_auth_checks(room_version, partial, sorted_rest, cache, ticker)

    # Step 5: the unconflicted state map wins wherever it has the key.
    resolved.update(unconflicted)
    return resolved


async def full_conflicted_set(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    cache: EventCache,
    store: StateResolutionStore,
    ticker: Ticker,
) -> set[str]:
    """The full conflicted set, every event of it fetched into ``cache``.

    Spec, "Full conflicted set": the conflicted state set and the auth
    difference, plus (v2.1, ``rooms/v12.md``) the conflicted state subgraph.
    Raises :class:`StateResolutionError` if a conflicted event is unknown.
    """
    _, conflicted = separate(state_sets)
    conflicted_ids: set[str] = set().union(*conflicted.values())
    await cache.fetch(conflicted_ids)
    unknown = sorted(eid for eid in conflicted_ids if eid not in cache)
    if unknown:
        raise StateResolutionError(f"conflicted state events unknown to the store: {unknown}")

    sets_as_ids = [set(s.values()) for s in state_sets]
    if isinstance(store, AuthChainDifferenceStore):
        auth_diff = await store.get_auth_chain_difference(sets_as_ids)
    else:
        auth_diff = await auth_chain_difference(cache, sets_as_ids, ticker)

    full = conflicted_ids | auth_diff
    if room_version.state_res is StateResAlgorithm.V2_1:
        full |= await conflicted_subgraph(cache, conflicted_ids, ticker)
    await cache.fetch(full)
    # An auth chain may name events nobody has (the walk cannot follow them);
    # like Synapse, leave those out rather than fail.
    return {eid for eid in full if eid in cache}


def _known(cache: EventCache, event_id: str) -> Event:
    ev = cache.get(event_id)
    assert ev is not None
    return ev


def _check_one_room(events: Iterable[Event]) -> None:
    rooms = {ev.room_id for ev in events}
    if len(rooms) > 1:
        raise StateResolutionError(f"events from several rooms in one resolution: {sorted(rooms)}")


async def iterative_auth_checks(
    room_version: RoomVersion,
    initial_state: Mapping[StateKey, str],
    event_ids: Sequence[str],
    cache: EventCache,
    ticker: Ticker,
) -> dict[StateKey, str]:
    """Apply each event in order if the authorisation rules allow it.

    Spec, "Iterative auth checks": a state key the rules need is read from the
    state built so far; if the state lacks it, from the event's own
    ``auth_events``, unless that auth event was rejected ("Rejected events":
    auth events are not re-authed, so rejected ones are not used). Events
    rejected before are not admitted (see the comment in the loop). In v12 the create event is named by the room ID rather than listed in
    ``auth_events``; it is supplied from there.
    """
    state = dict(initial_state)
    needed: set[str] = set()
    types_of: dict[str, list[StateKey]] = {}
    for eid in event_ids:
        ev = _known(cache, eid)
        types = set(auth_types_for_event(ev, room_version))
        if ev.state_tuple != CREATE:
            # check_auth reads the create event in every version, v12 too
            # (where auth_types_for_event leaves it out of the selection).
            types.add(CREATE)
        types_of[eid] = sorted(types)
        needed.update(auth_event_ids_with_create(ev))
        needed.update(state[k] for k in types if k in state)
    await cache.fetch(needed)

    for eid in event_ids:
        ev = _known(cache, eid)
        if not ev.is_state() or ev.rejected_reason is not None:
            # An event we rejected is not admitted, as Synapse does (its
            # ``_iterative_auth_checks``). The spec would re-auth events that
            # were rejected against the state at the event; we cannot tell
            # that kind of rejection from failing the auth chain, which must
            # stay out, and check_auth refuses rejected auth events, so an
            # admitted one could not be used by the events after it anyway.
            # Agreeing with Synapse keeps our state converging with its.
            await ticker.tick()
            continue
        own: dict[StateKey, Event] = {}
        for aid in ev.auth_event_ids:
            aev = cache.get(aid)
            if aev is not None and aev.is_state() and aev.rejected_reason is None:
                own[aev.state_tuple] = aev
        create_id = implied_create_event_id(ev)
        if create_id is not None and CREATE not in own:
            create = cache.get(create_id)
            if create is not None and create.rejected_reason is None:
                own[CREATE] = create

        auth_events: dict[StateKey, Event] = {}
        for key in types_of[eid]:
            in_state = state.get(key)
            sev = cache.get(in_state) if in_state is not None else None
            # A rejected event can only be in the state if a caller put it
            # there; like Synapse, do not auth against it.
            if sev is not None and sev.rejected_reason is None:
                auth_events[key] = sev
            elif key in own:
                auth_events[key] = own[key]
        try:
            check_auth(ev, auth_events)
        except AuthError:
            pass
        else:
            state[ev.state_tuple] = eid
        await ticker.tick()
    return state


__all__ = ["full_conflicted_set", "iterative_auth_checks", "resolve_state"]
