"""Auth events selection, and the rules about an event's own ``auth_events``.

Spec: ``server-server-api.md`` "Auth events selection"; rule 2 of
``rooms/v10.md``/``v11.md`` and rules 2-3 of ``rooms/v12.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.auth_rules._common import (
    AUTHORISING_USER,
    CREATE,
    CREATE_KEY,
    JOIN_RULES_KEY,
    MEMBER,
    POWER_LEVELS_KEY,
    THIRD_PARTY_INVITE,
)
from federation.auth_rules.catalogue import deny
from federation.events import Event
from federation.room_versions import RoomVersion


def auth_types_for_event(
    event_or_partial: Event | Mapping[str, Any], rv: RoomVersion
) -> set[tuple[str, str]]:
    """The ``(type, state_key)`` pairs whose current state events authorise this event.

    ``event_or_partial`` is an :class:`Event` or a mapping with at least
    ``type`` and ``sender`` (plus ``state_key`` and ``content`` for member
    events), such as an event being built. The create event is selected only
    when the room version needs it listed (not v12: ``room_id_from_create_event``).
    """
    pdu = event_or_partial.pdu if isinstance(event_or_partial, Event) else event_or_partial
    event_type = pdu.get("type")
    if event_type == CREATE:
        return set()
    types: set[tuple[str, str]] = {POWER_LEVELS_KEY}
    if not rv.room_id_from_create_event:
        types.add(CREATE_KEY)
    sender = pdu.get("sender")
    if isinstance(sender, str):
        types.add((MEMBER, sender))
    if event_type != MEMBER:
        return types

    content = pdu.get("content")
    if not isinstance(content, Mapping):
        content = {}
    state_key = pdu.get("state_key")
    if isinstance(state_key, str):
        types.add((MEMBER, state_key))
    membership = content.get("membership")
    if membership in ("join", "invite", "knock"):
        types.add(JOIN_RULES_KEY)
    if membership == "invite":
        tpi = content.get("third_party_invite")
        signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
        token = signed.get("token") if isinstance(signed, Mapping) else None
        if isinstance(token, str):
            types.add((THIRD_PARTY_INVITE, token))
    if membership == "join" and rv.restricted_join_rule:
        authoriser = content.get(AUTHORISING_USER)
        if isinstance(authoriser, str):
            types.add((MEMBER, authoriser))
    return types


def create_event_id_for_room(room_id: str) -> str:
    """v12: the create event's ID is the room ID with the ``$`` sigil."""
    return "$" + room_id[1:]


def check_auth_events_selection(
    event: Event, auth_events_by_id: Mapping[str, Event]
) -> dict[tuple[str, str], Event]:
    """Check the event's own ``auth_events`` and return them keyed for :func:`check_auth`.

    ``auth_events_by_id`` must hold every event the PDU lists in ``auth_events``
    (extra entries are ignored). In v12 it must also hold the create event
    (ID derived from the room ID), which is added to the result because the
    rules after rule 3 read it.

    Rules: v10/v11 2.1-2.5; v12 2 and 3.1-3.5. A create event has no auth
    events to check (rule 1 decides it), so it returns ``{}``.
    """
    rv = event.room_version
    if event.type == CREATE:
        return {}

    create: Event | None = None
    if rv.room_id_from_create_event:
        # v12 rule 2.
        create = auth_events_by_id.get(create_event_id_for_room(event.room_id))
        if create is None or create.type != CREATE or create.state_key != "":
            raise deny(rv, "room_id.create_event",
                       f"room_id {event.room_id} is not the ID of a known m.room.create event")
        if create.rejected_reason is not None:
            raise deny(rv, "room_id.create_event",
                       f"the m.room.create event of {event.room_id} was rejected")

    listed: list[Event] = []
    for event_id in event.auth_event_ids:
        auth_event = auth_events_by_id.get(event_id)
        if auth_event is None:
            raise deny(rv, "auth_events.missing", f"auth event {event_id} is not available")
        listed.append(auth_event)

    keyed: dict[tuple[str, str], Event] = {}
    for auth_event in listed:  # 2.1
        key = (auth_event.type, auth_event.state_key or "")
        if key in keyed:
            raise deny(rv, "auth_events.duplicate",
                       f"auth_events lists {key} twice ({keyed[key].event_id}, "
                       f"{auth_event.event_id})")
        keyed[key] = auth_event

    expected = auth_types_for_event(event, rv)
    for key, auth_event in keyed.items():  # 2.2
        if not auth_event.is_state() or key not in expected:
            if key == CREATE_KEY and rv.room_id_from_create_event:
                why = "the m.room.create event must not be listed in this room version"
            else:
                why = f"{key} is not chosen by auth events selection"
            raise deny(rv, "auth_events.unexpected", f"{auth_event.event_id}: {why}")

    for auth_event in listed:  # 2.3
        if auth_event.rejected_reason is not None:
            raise deny(rv, "auth_events.rejected",
                       f"auth event {auth_event.event_id} was rejected "
                       f"({auth_event.rejected_reason})")

    if not rv.room_id_from_create_event and CREATE_KEY not in keyed:  # 2.4
        raise deny(rv, "auth_events.no_create", "no m.room.create event among auth_events")

    for auth_event in listed:  # 2.5
        if auth_event.room_id != event.room_id:
            raise deny(rv, "auth_events.room_id",
                       f"auth event {auth_event.event_id} is in room {auth_event.room_id}, "
                       f"not {event.room_id}")

    if create is not None:
        keyed[CREATE_KEY] = create
    return keyed
