"""Power events, the senders' power, and the two orderings of state resolution v2.

Spec: ``rooms/fragments/v2-state-res.md`` "Definitions" (power events, reverse
topological power ordering, mainline ordering) and ``rooms/v12.md`` (room
creators have infinite power).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from federation.events import Event
from federation.room_versions import RoomVersion
from federation.state_res._loop import Ticker
from federation.state_res.graph import StateKey, lexicographical_topological_sort
from federation.state_res.store import EventCache

CREATE: StateKey = ("m.room.create", "")
POWER_LEVELS: StateKey = ("m.room.power_levels", "")
JOIN_RULES: StateKey = ("m.room.join_rules", "")


def is_power_event(event: Event) -> bool:
    """Spec, "Power events": events that might remove someone's ability to act.

    Power levels, join rules, and a leave or ban of someone other than the
    sender (kicks and bans, not a user leaving by themselves).
    """
    if not event.is_state():
        return False
    if event.state_tuple in (POWER_LEVELS, JOIN_RULES):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def implied_create_event_id(event: Event) -> str | None:
    """The create event a v12 event points at through its room ID.

    ``rooms/v12.md``: the create event is never listed in ``auth_events``; the
    room ID is "!" + its event ID's hash, which names it instead.
    """
    rv = event.room_version
    if not rv.room_id_from_create_event or event.state_tuple == CREATE:
        return None
    room_id = event.room_id
    if not room_id.startswith("!"):
        return None
    return "$" + room_id[1:]


def auth_event_ids_with_create(event: Event) -> list[str]:
    """The event's auth events plus, in v12, the create event its room ID names."""
    ids = event.auth_event_ids
    create_id = implied_create_event_id(event)
    if create_id is not None and create_id not in ids:
        return [*ids, create_id]
    return ids


def auth_events_by_key(event: Event, cache: EventCache) -> dict[StateKey, Event]:
    """The event's known auth events by ``(type, state_key)``, create included in v12."""
    out: dict[StateKey, Event] = {}
    for aid in auth_event_ids_with_create(event):
        aev = cache.get(aid)
        if aev is not None and aev.is_state():
            out[aev.state_tuple] = aev
    return out


def room_creators(create: Event, rv: RoomVersion) -> frozenset[str]:
    """Who created the room, per the create event (``rooms/v12.md``, v11 and v10).

    v12: the sender plus ``additional_creators``; v11: the sender; v10: the
    ``creator`` content key.
    """
    if rv.implicit_room_creator:
        creators = {create.sender}
        if rv.privileged_room_creators:
            extra = create.content.get("additional_creators")
            if isinstance(extra, list):
                creators.update(u for u in extra if isinstance(u, str))
        return frozenset(creators)
    creator = create.content.get("creator")
    return frozenset({creator}) if isinstance(creator, str) else frozenset()


def _as_int(value: object, default: int) -> int:
    # Power levels are integers from v10 on (enforced by the auth rules); a
    # malformed value in an accepted event can only come from a buggy peer, and
    # is read as the default rather than crash the resolution.
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def sender_power_level(event: Event, auth_events: Mapping[StateKey, Event]) -> float:
    """The sender's power level "when looking at their respective auth_events".

    Spec, "Reverse topological power ordering", rule 1. With no power levels
    event the room creator has 100 and everyone else 0 (client-server API,
    ``m.room.power_levels``); in v12 creators have infinite power.
    """
    rv = event.room_version
    create = auth_events.get(CREATE)
    creators = room_creators(create, rv) if create is not None else frozenset()
    if rv.privileged_room_creators and event.sender in creators:
        return math.inf
    pl = auth_events.get(POWER_LEVELS)
    if pl is None:
        return 100 if event.sender in creators else 0
    content = pl.content
    users = content.get("users")
    if isinstance(users, Mapping) and event.sender in users:
        return _as_int(users[event.sender], 0)
    return _as_int(content.get("users_default"), 0)


async def reverse_topological_power_order(
    power_events: Iterable[str],
    full_conflicted: AbstractSet[str],
    cache: EventCache,
    ticker: Ticker,
) -> list[str]:
    """Step 1: the power events and their conflicted auth ancestors, earliest first.

    Spec, "Algorithm" step 1 and "Reverse topological power ordering". The set
    is enlarged by the auth chain of each power event within the full
    conflicted set, following auth edges between events of that set (as
    Synapse does); the sort breaks ties by greater sender power, then smaller
    ``origin_server_ts``, then smaller event ID.

    Every event in ``full_conflicted`` must already be in ``cache``, with its
    auth events.
    """
    graph: dict[str, set[str]] = {}
    stack = sorted(power_events)
    while stack:
        eid = stack.pop()
        if eid in graph:
            continue
        ev = cache.get(eid)
        assert ev is not None
        edges = {aid for aid in ev.auth_event_ids if aid in full_conflicted}
        graph[eid] = edges
        stack.extend(aid for aid in edges if aid not in graph)
        await ticker.tick()

    order_key: dict[str, tuple[float, int, str]] = {}
    for eid in graph:
        ev = cache.get(eid)
        assert ev is not None
        level = sender_power_level(ev, auth_events_by_key(ev, cache))
        order_key[eid] = (-level, ev.origin_server_ts, eid)
        await ticker.tick()
    return lexicographical_topological_sort(graph, order_key.__getitem__)


def _power_levels_in_auth(event: Event, cache: EventCache) -> Event | None:
    for aid in event.auth_event_ids:
        aev = cache.get(aid)
        if aev is not None and aev.state_tuple == POWER_LEVELS and aev.is_state():
            return aev
    return None


async def mainline_order(
    event_ids: Iterable[str],
    resolved_power_levels: str | None,
    cache: EventCache,
    ticker: Ticker,
) -> list[str]:
    """Step 3: order ``event_ids`` by mainline ordering based on the resolved power levels.

    Spec, "Mainline ordering". The mainline of P₀ is P₀, the power levels event
    in its auth events, and so on. An event's mainline position is the index of
    the first event in *its* chain of power levels events (not counting
    itself) that lies on the mainline, or ∞. Greater positions sort first, then
    smaller ``origin_server_ts``, then smaller event ID.

    Positions are kept as "depths" counted from the oldest mainline event
    (depth n+1-i for position i, 0 for ∞) so one ascending sort does it.
    """
    ids = list(event_ids)
    if not ids:
        return []

    mainline: list[str] = []
    pl_id = resolved_power_levels
    while pl_id is not None:
        await cache.fetch([pl_id])
        pl_ev = cache.get(pl_id)
        if pl_ev is None:
            break
        mainline.append(pl_id)
        await cache.fetch(pl_ev.auth_event_ids)
        nxt = _power_levels_in_auth(pl_ev, cache)
        pl_id = nxt.event_id if nxt is not None else None
        await ticker.tick()
    depth_of: dict[str, int] = {eid: len(mainline) - i for i, eid in enumerate(mainline)}

    # Memoised per power levels event: many events share the same chain.
    pl_depth: dict[str, int] = {}

    async def depth_via(pl: Event | None) -> int:
        walked: list[str] = []
        depth = 0
        while pl is not None:
            if pl.event_id in depth_of:
                depth = depth_of[pl.event_id]
                break
            if pl.event_id in pl_depth:
                depth = pl_depth[pl.event_id]
                break
            walked.append(pl.event_id)
            await cache.fetch(pl.auth_event_ids)
            pl = _power_levels_in_auth(pl, cache)
            await ticker.tick()
        for eid in walked:
            pl_depth[eid] = depth
        return depth

    await cache.fetch(aid for eid in ids if (e := cache.get(eid)) for aid in e.auth_event_ids)
    keys: dict[str, tuple[int, int, str]] = {}
    for eid in ids:
        ev = cache.get(eid)
        assert ev is not None
        depth = await depth_via(_power_levels_in_auth(ev, cache))
        keys[eid] = (depth, ev.origin_server_ts, eid)
        await ticker.tick()
    return sorted(ids, key=keys.__getitem__)
