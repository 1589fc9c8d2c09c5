"""Rules about the room's create event.

Spec: rule 1 ("If type is m.room.create"), v12 rule 2 (the room ID is the
create event's ID), and the ``m.federate`` rule (v10/v11 rule 3, v12 rule 4).
"""

from __future__ import annotations

from federation.auth_rules._common import CREATE_KEY, AuthEvents
from federation.auth_rules._ids import domain_of, is_valid_user_id
from federation.auth_rules.catalogue import deny
from federation.auth_rules.selection import create_event_id_for_room
from federation.events import Event
from federation.room_versions import KNOWN_UNSUPPORTED_ROOM_VERSIONS, SUPPORTED_ROOM_VERSIONS


def check_create(event: Event) -> str:
    """Rule 1: an ``m.room.create`` event. Returns the allowing rule id."""
    rv = event.room_version
    if event.pdu.get("prev_events"):  # 1.1
        raise deny(rv, "create.prev_events", "the create event has prev_events")
    if rv.room_id_from_create_event:  # v12 1.2
        if "room_id" in event.pdu:
            raise deny(rv, "create.room_id_present",
                       "the create event must not have a room_id: it is derived from the "
                       "event ID")
    else:  # v10/v11 1.2
        room_id = event.pdu.get("room_id")
        if not isinstance(room_id, str) or domain_of(room_id) != domain_of(event.sender):
            raise deny(rv, "create.room_id_domain",
                       f"room_id {room_id!r} is not on the sender's server "
                       f"{domain_of(event.sender)}")
    content = event.content
    if "room_version" in content:  # 1.3
        version = content["room_version"]
        recognised = isinstance(version, str) and (
            version in SUPPORTED_ROOM_VERSIONS or version in KNOWN_UNSUPPORTED_ROOM_VERSIONS
        )
        if not recognised:
            raise deny(rv, "create.room_version", f"room_version {version!r} is not recognised")
    if not rv.implicit_room_creator and "creator" not in content:  # v10 1.4
        raise deny(rv, "create.creator_missing", "content has no creator")
    if rv.privileged_room_creators and "additional_creators" in content:  # v12 1.4
        extra = content["additional_creators"]
        if not isinstance(extra, list):
            raise deny(rv, "create.additional_creators", "additional_creators is not an array")
        for user_id in extra:
            if not is_valid_user_id(user_id):
                raise deny(rv, "create.additional_creators",
                           f"additional_creators entry {user_id!r} is not a valid user ID")
    return "create.allow"


def check_room_id(event: Event, auth_events: AuthEvents) -> None:
    """v12 rule 2: the room ID must be an accepted create event's ID, ``!`` for ``$``."""
    rv = event.room_version
    create = auth_events.get(CREATE_KEY)
    if create is None:
        raise deny(rv, "room_id.create_event",
                   f"the m.room.create event of {event.room_id} was not supplied")
    if create.event_id != create_event_id_for_room(event.room_id):
        raise deny(rv, "room_id.create_event",
                   f"room_id {event.room_id} does not match create event {create.event_id}")
    if create.rejected_reason is not None:
        raise deny(rv, "room_id.create_event", f"create event {create.event_id} was rejected")


def check_supplied_auth_events(event: Event, auth_events: AuthEvents) -> None:
    """Rules 2.3-2.5 (v12: 3.3, 3.5) over the supplied mapping.

    2.1 and 2.2 need the PDU's own ``auth_events`` list and live in
    :func:`~federation.auth_rules.selection.check_auth_events_selection`.
    """
    rv = event.room_version
    for auth_event in auth_events.values():
        if auth_event.rejected_reason is not None:
            raise deny(rv, "auth_events.rejected",
                       f"auth event {auth_event.event_id} was rejected "
                       f"({auth_event.rejected_reason})")
    if not rv.room_id_from_create_event and CREATE_KEY not in auth_events:
        raise deny(rv, "auth_events.no_create", "no m.room.create event among auth events")
    for auth_event in auth_events.values():
        if auth_event.room_id != event.room_id:
            raise deny(rv, "auth_events.room_id",
                       f"auth event {auth_event.event_id} is in room {auth_event.room_id}, "
                       f"not {event.room_id}")


def check_federate(event: Event, auth_events: AuthEvents) -> None:
    """Rule 3 (v12: 4): ``m.federate: false`` keeps the room on the creator's server."""
    create = auth_events.get(CREATE_KEY)
    if create is None or create.content.get("m.federate", True) is not False:
        return
    if domain_of(event.sender) != domain_of(create.sender):
        raise deny(event.room_version, "federate",
                   f"the room does not federate and {event.sender} is not on "
                   f"{domain_of(create.sender)}")
