"""Power levels: reading them, and the rules for changing them.

Spec: client-server ``m.room.power_levels`` (defaults), and the authorisation
rules of ``rooms/v10.md``/``v11.md`` rule 9 and ``rooms/v12.md`` rule 10 (with
10.4, creators may not appear in ``users``). In v12 the room creators have an
infinitely high power level (``rooms/v12.md``, MSC4289), returned as ``math.inf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from federation.auth_rules._common import CREATE_KEY, POWER_LEVELS_KEY, AuthEvents
from federation.auth_rules._ids import is_valid_user_id
from federation.auth_rules.catalogue import deny
from federation.events import Event
from federation.room_versions import RoomVersion

# m.room.power_levels schema: the value of each named level when absent.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "redact": 50,
    "kick": 50,
    "invite": 0,
}

# Canonical JSON integer range (appendices "Canonical JSON").
_MAX_INT = 2**53 - 1

# Without an m.room.power_levels event, the creator has this level (v1-v11).
_CREATOR_DEFAULT_LEVEL = 100


def as_level(value: object, rv: RoomVersion) -> int | None:
    """``value`` as a power level, or None if it is not one.

    From v10 (``enforce_int_power_levels``) only JSON integers count; booleans
    are not integers even though Python thinks so.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_MAX_INT <= value <= _MAX_INT else None
    if isinstance(value, str) and not rv.enforce_int_power_levels:
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def room_creators(create_event: Event) -> set[str]:
    """The room's creators.

    v12 (``privileged_room_creators``): the create event's sender plus
    ``content.additional_creators``. v11 (``implicit_room_creator``): the
    sender. v10: ``content.creator``.
    """
    rv = create_event.room_version
    if rv.implicit_room_creator:
        creators = {create_event.sender}
        if rv.privileged_room_creators:
            extra = create_event.content.get("additional_creators")
            if isinstance(extra, list):
                creators.update(u for u in extra if isinstance(u, str))
        return creators
    creator = create_event.content.get("creator")
    return {creator} if isinstance(creator, str) else set()


def get_power_level(user_id: str, auth_events: AuthEvents) -> int | float:
    """``user_id``'s power level: ``math.inf`` for v12 creators, else an int.

    Spec: ``m.room.power_levels`` ("users", "users_default"), and for rooms
    without power levels "the room's creator has a power level of 100, and all
    other users have a power level of 0".
    """
    create = auth_events.get(CREATE_KEY)
    creators = room_creators(create) if create is not None else set()
    if create is not None and create.room_version.privileged_room_creators:
        if user_id in creators:
            return math.inf
    pl = auth_events.get(POWER_LEVELS_KEY)
    if pl is None:
        return _CREATOR_DEFAULT_LEVEL if user_id in creators else 0
    users = pl.content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = as_level(users[user_id], pl.room_version)
        if level is not None:
            return level
    return get_named_level(auth_events, "users_default")


# The name Synapse readers look for; the same function.
get_user_power_level = get_power_level


def get_named_level(auth_events: AuthEvents, name: str) -> int:
    """A named level (``ban``, ``kick``, ``invite``, ``redact``, ``state_default``,
    ``events_default``, ``users_default``) with the schema's default when absent."""
    default = NAMED_LEVEL_DEFAULTS[name]
    pl = auth_events.get(POWER_LEVELS_KEY)
    if pl is None or name not in pl.content:
        return default
    level = as_level(pl.content[name], pl.room_version)
    return default if level is None else level


def get_send_level(event_type: str, is_state: bool, auth_events: AuthEvents) -> int:
    """The *required power level* to send an event of ``event_type``.

    Spec: ``m.room.power_levels``: ``events[type]``, else ``state_default`` for
    state events and ``events_default`` for the rest.
    """
    pl = auth_events.get(POWER_LEVELS_KEY)
    if pl is not None:
        events = pl.content.get("events")
        if isinstance(events, Mapping) and event_type in events:
            level = as_level(events[event_type], pl.room_version)
            if level is not None:
                return level
    return get_named_level(auth_events, "state_default" if is_state else "events_default")


def _level_maps(rv: RoomVersion) -> tuple[str, ...]:
    # v6 (MSC2209) put `notifications` under the same rules as `events`.
    return ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)


def _check_content_shape(event: Event, auth_events: AuthEvents) -> None:
    """Rules 9.1-9.3 (v12: 10.1-10.4): the new content is well-formed."""
    rv = event.room_version
    content = event.content
    for name in NAMED_LEVEL_DEFAULTS:
        if name in content and as_level(content[name], rv) is None:
            raise deny(rv, "power_levels.int_fields",
                       f"{name} is {content[name]!r}, not an integer")
    for map_name in _level_maps(rv):
        if map_name not in content:
            continue
        levels = content[map_name]
        if not isinstance(levels, Mapping):
            raise deny(rv, "power_levels.maps", f"{map_name} is not an object")
        for key, value in levels.items():
            if as_level(value, rv) is None:
                raise deny(rv, "power_levels.maps",
                           f"{map_name}[{key!r}] is {value!r}, not an integer")
    if "users" in content:
        users = content["users"]
        if not isinstance(users, Mapping):
            raise deny(rv, "power_levels.users", "users is not an object")
        for user_id, value in users.items():
            if not is_valid_user_id(user_id):
                raise deny(rv, "power_levels.users", f"users key {user_id!r} is not a user ID")
            if as_level(value, rv) is None:
                raise deny(rv, "power_levels.users",
                           f"users[{user_id!r}] is {value!r}, not an integer")
        if rv.privileged_room_creators:
            create = auth_events.get(CREATE_KEY)
            creators = room_creators(create) if create is not None else set()
            listed = sorted(creators.intersection(users))
            if listed:
                raise deny(rv, "power_levels.creator_in_users",
                           f"room creator(s) {', '.join(listed)} may not be listed in users")


def _entries(content: Mapping[str, Any], map_name: str, rv: RoomVersion) -> dict[str, int]:
    levels = content.get(map_name)
    if not isinstance(levels, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, value in levels.items():
        level = as_level(value, rv)
        if level is not None:
            out[str(key)] = level
    return out


def check_power_levels_change(event: Event, auth_events: AuthEvents) -> str:
    """Rule 9 (v12: 10) for an ``m.room.power_levels`` event; returns the allowing rule."""
    rv = event.room_version
    _check_content_shape(event, auth_events)
    current = auth_events.get(POWER_LEVELS_KEY)
    if current is None:
        return "power_levels.initial"
    sender_level = get_power_level(event.sender, auth_events)
    old_c, new_c = current.content, event.content
    old_rv = current.room_version

    # 9.5: named levels added, changed or removed.
    for name in NAMED_LEVEL_DEFAULTS:
        old = as_level(old_c[name], old_rv) if name in old_c else None
        new = as_level(new_c[name], rv) if name in new_c else None
        if old == new and (name in old_c) == (name in new_c):
            continue
        if old is not None and old > sender_level:
            raise deny(rv, "power_levels.named.current",
                       f"{name} is {old}, above the sender's level {sender_level}")
        if new is not None and new > sender_level:
            raise deny(rv, "power_levels.named.new",
                       f"{name} would be {new}, above the sender's level {sender_level}")

    # 9.6 then 9.7: events (and notifications) entries.
    maps = [(m, _entries(old_c, m, old_rv), _entries(new_c, m, rv)) for m in _level_maps(rv)]
    for map_name, old_map, new_map in maps:
        for key, old in old_map.items():
            if new_map.get(key) != old and old > sender_level:
                raise deny(rv, "power_levels.events.current",
                           f"{map_name}[{key!r}] is {old}, above the sender's level "
                           f"{sender_level}")
    for map_name, old_map, new_map in maps:
        for key, new in new_map.items():
            if old_map.get(key) != new and new > sender_level:
                raise deny(rv, "power_levels.events.new",
                           f"{map_name}[{key!r}] would be {new}, above the sender's level "
                           f"{sender_level}")

    # 9.8 then 9.9: users entries.
    old_users, new_users = _entries(old_c, "users", old_rv), _entries(new_c, "users", rv)
    for user_id, old in old_users.items():
        if user_id == event.sender or new_users.get(user_id) == old:
            continue
        if old >= sender_level:
            raise deny(rv, "power_levels.users.current",
                       f"{user_id} has level {old}, not below the sender's level {sender_level}")
    for user_id, new in new_users.items():
        if old_users.get(user_id) != new and new > sender_level:
            raise deny(rv, "power_levels.users.new",
                       f"{user_id} would get level {new}, above the sender's level "
                       f"{sender_level}")
    return "power_levels.allow"
