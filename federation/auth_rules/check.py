"""The authorisation rules, in the spec's order.

Spec: ``rooms/v10.md``, ``rooms/v11.md``, ``rooms/v12.md``, "Authorisation rules".
Each step lives in the module of its concept; this one only sequences them.
"""

from __future__ import annotations

from federation.auth_rules._common import (
    CREATE,
    MEMBER,
    POWER_LEVELS,
    THIRD_PARTY_INVITE,
    AuthEvents,
    membership_of,
)
from federation.auth_rules.catalogue import deny
from federation.auth_rules.create import (
    check_create,
    check_federate,
    check_room_id,
    check_supplied_auth_events,
)
from federation.auth_rules.member import check_membership
from federation.auth_rules.power import (
    check_power_levels_change,
    get_power_level,
    get_send_level,
)
from federation.auth_rules.third_party import check_third_party_invite_event
from federation.events import Event


def authorising_rule(event: Event, auth_events: AuthEvents) -> str:
    """The id of the rule that allows ``event``; raises :class:`AuthError` otherwise.

    Same contract as :func:`check_auth`, for callers (and tests) that want to
    know *why* an event was allowed.
    """
    rv = event.room_version
    if event.type == CREATE:  # 1
        return check_create(event)
    if rv.room_id_from_create_event:  # v12 2
        check_room_id(event, auth_events)
    check_supplied_auth_events(event, auth_events)  # 2.3-2.5 (v12: 3.3, 3.5)
    check_federate(event, auth_events)  # 3
    if event.type == MEMBER:  # 4
        return check_membership(event, auth_events)
    if membership_of(event.sender, auth_events) != "join":  # 5
        raise deny(rv, "sender_not_joined", f"{event.sender} is not joined to the room")
    if event.type == THIRD_PARTY_INVITE:  # 6
        return check_third_party_invite_event(event, auth_events)
    level = get_power_level(event.sender, auth_events)
    required = get_send_level(event.type, event.is_state(), auth_events)
    if required > level:  # 7
        raise deny(rv, "send_level",
                   f"{event.type} needs level {required}; {event.sender} has {level}")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:  # 8
        raise deny(rv, "state_key.user",
                   f"state_key {state_key} is a user ID other than the sender {event.sender}")
    if event.type == POWER_LEVELS:  # 9
        return check_power_levels_change(event, auth_events)
    return "default.allow"  # 10


def check_auth(event: Event, auth_events: AuthEvents) -> None:
    """Apply the room version's authorisation rules to ``event``.

    ``auth_events`` maps ``(type, state_key)`` to the events that authorise it:
    either the event's own ``auth_events`` (as returned by
    :func:`check_auth_events_selection`, which also checks rules 2.1/2.2) or the
    room state before it. In v12 it must include the ``m.room.create`` event,
    even though the PDU does not list it. Pure: no I/O, no clock.

    Raises :class:`AuthError` (403 ``M_FORBIDDEN``) naming the failed rule.
    """
    authorising_rule(event, auth_events)
