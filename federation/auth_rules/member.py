"""Membership rules: rule 4 of v10/v11, rule 5 of v12 (``m.room.member``).

Spec: the authorisation rules of ``rooms/v10.md``, ``v11.md``, ``v12.md``;
client-server "Room membership", "Restricted rooms", "Knocking on rooms".
Rule numbers in comments follow the v10/v11 text (v12: add one to the first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.auth_rules._common import (
    AUTHORISING_USER,
    CREATE_KEY,
    AuthEvents,
    join_rule_of,
    membership_of,
)
from federation.auth_rules._ids import domain_of
from federation.auth_rules.catalogue import AuthError, deny
from federation.auth_rules.power import get_named_level, get_power_level
from federation.auth_rules.third_party import check_third_party_invite_membership
from federation.events import Event


def check_membership(event: Event, auth_events: AuthEvents) -> str:
    """Rule 4: decide an ``m.room.member`` event. Returns the allowing rule id.

    Assumes rules 1-3 have passed (:func:`~federation.auth_rules.check_auth`
    runs them first).
    """
    rv = event.room_version
    target = event.state_key
    membership = event.membership
    if target is None or membership is None:  # 4.1
        raise deny(rv, "member.malformed", "no state_key, or no membership in content")
    _check_authoriser_signature(event)  # 4.2

    if membership == "join":
        return _check_join(event, target, auth_events)
    if membership == "invite":
        return _check_invite(event, target, auth_events)
    if membership == "leave":
        return _check_leave(event, target, auth_events)
    if membership == "ban":
        return _check_ban(event, target, auth_events)
    if membership == "knock" and rv.knock_join_rule:
        return _check_knock(event, target, auth_events)
    raise deny(rv, "member.unknown", f"unknown membership {membership!r}")  # 4.8


def is_membership_change_allowed(event: Event, auth_events: AuthEvents) -> bool:
    """Whether rule 4 alone allows this ``m.room.member`` event (no rules 1-3)."""
    try:
        check_membership(event, auth_events)
    except AuthError:
        return False
    return True


def _check_authoriser_signature(event: Event) -> None:
    """4.2.1: a ``join_authorised_via_users_server`` must come with that server's signature.

    Only the presence of the signature is checked here (auth rules are pure);
    verifying it cryptographically is part of the signature checks on receipt.
    """
    content = event.content
    if AUTHORISING_USER not in content:
        return
    authoriser = content[AUTHORISING_USER]
    rv = event.room_version
    if not isinstance(authoriser, str) or ":" not in authoriser:
        raise deny(rv, "member.authoriser_signature",
                   f"{AUTHORISING_USER} {authoriser!r} does not name a user on a server")
    server = domain_of(authoriser)
    signatures = event.pdu.get("signatures")
    if not isinstance(signatures, Mapping) or not signatures.get(server):
        raise deny(rv, "member.authoriser_signature",
                   f"the event is not signed by {server}, the server of the authorising "
                   f"user {authoriser}")


def _first_join_creator(create: Event) -> Any:
    # 4.3.1: v10 names content.creator; v11+ (implicit_room_creator) the
    # sender of the create event. v12's additional creators are not included.
    if create.room_version.implicit_room_creator:
        return create.sender
    return create.content.get("creator")


def _check_join(event: Event, target: str, auth_events: AuthEvents) -> str:
    rv = event.room_version
    create = auth_events.get(CREATE_KEY)
    prev = event.prev_event_ids
    if (  # 4.3.1
        create is not None
        and len(prev) == 1
        and prev[0] == create.event_id
        and target == _first_join_creator(create)
    ):
        return "member.join.creator_first"
    if event.sender != target:  # 4.3.2
        raise deny(rv, "member.join.sender_mismatch",
                   f"{event.sender} cannot join on behalf of {target}")
    current = membership_of(target, auth_events)
    if current == "ban":  # 4.3.3
        raise deny(rv, "member.join.banned", f"{target} is banned from the room")

    join_rule = join_rule_of(auth_events)
    if join_rule == "invite" or (join_rule == "knock" and rv.knock_join_rule):  # 4.3.4
        if current in ("invite", "join"):
            return "member.join.invited"
    elif (join_rule == "restricted" and rv.restricted_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    ):  # 4.3.5
        if current in ("invite", "join"):
            return "member.join.restricted.member"
        _check_restricted_authoriser(event, auth_events)
        return "member.join.restricted.allow"
    elif join_rule == "public":  # 4.3.6
        return "member.join.public"
    raise deny(rv, "member.join.not_allowed",  # 4.3.7
               f"the join rule is {join_rule!r} and {target} is not invited")


def _check_restricted_authoriser(event: Event, auth_events: AuthEvents) -> None:
    """4.3.5.2: the authorising user must be joined and hold the *invite level*."""
    rv = event.room_version
    authoriser = event.content.get(AUTHORISING_USER)
    if not isinstance(authoriser, str):
        raise deny(rv, "member.join.restricted.authoriser",
                   f"restricted room: not invited, and no {AUTHORISING_USER} in content")
    if membership_of(authoriser, auth_events) != "join":
        raise deny(rv, "member.join.restricted.authoriser",
                   f"authorising user {authoriser} is not joined to the room")
    level = get_power_level(authoriser, auth_events)
    needed = get_named_level(auth_events, "invite")
    if level < needed:
        raise deny(rv, "member.join.restricted.authoriser",
                   f"authorising user {authoriser} has level {level}, below the invite "
                   f"level {needed}")


def _check_invite(event: Event, target: str, auth_events: AuthEvents) -> str:
    rv = event.room_version
    if "third_party_invite" in event.content:  # 4.4.1
        check_third_party_invite_membership(event, auth_events)
    if membership_of(event.sender, auth_events) != "join":  # 4.4.2
        raise deny(rv, "member.invite.sender_not_joined", f"{event.sender} is not joined")
    current = membership_of(target, auth_events)
    if current in ("join", "ban"):  # 4.4.3
        raise deny(rv, "member.invite.target_state", f"{target} is already {current}")
    level = get_power_level(event.sender, auth_events)
    needed = get_named_level(auth_events, "invite")
    if level >= needed:  # 4.4.4
        return "member.invite.allow"
    raise deny(rv, "member.invite.power",  # 4.4.5
               f"{event.sender} has level {level}, below the invite level {needed}")


def _check_leave(event: Event, target: str, auth_events: AuthEvents) -> str:
    rv = event.room_version
    current = membership_of(target, auth_events)
    if event.sender == target:  # 4.5.1
        if current in ("invite", "join", "knock"):
            return "member.leave.self"
        raise deny(rv, "member.leave.self",
                   f"{target} cannot leave: their membership is {current or 'none'}")
    if membership_of(event.sender, auth_events) != "join":  # 4.5.2
        raise deny(rv, "member.leave.sender_not_joined", f"{event.sender} is not joined")
    level = get_power_level(event.sender, auth_events)
    ban_level = get_named_level(auth_events, "ban")
    if current == "ban" and level < ban_level:  # 4.5.3
        raise deny(rv, "member.leave.unban_power",
                   f"{event.sender} has level {level}, below the ban level {ban_level} "
                   f"needed to unban")
    kick_level = get_named_level(auth_events, "kick")
    target_level = get_power_level(target, auth_events)
    if level >= kick_level and target_level < level:  # 4.5.4
        return "member.leave.kick"
    raise deny(rv, "member.leave.power",  # 4.5.5
               f"{event.sender} (level {level}) cannot remove {target} (level "
               f"{target_level}); the kick level is {kick_level}")


def _check_ban(event: Event, target: str, auth_events: AuthEvents) -> str:
    rv = event.room_version
    if membership_of(event.sender, auth_events) != "join":  # 4.6.1
        raise deny(rv, "member.ban.sender_not_joined", f"{event.sender} is not joined")
    level = get_power_level(event.sender, auth_events)
    ban_level = get_named_level(auth_events, "ban")
    target_level = get_power_level(target, auth_events)
    if level >= ban_level and target_level < level:  # 4.6.2
        return "member.ban.allow"
    raise deny(rv, "member.ban.power",  # 4.6.3
               f"{event.sender} (level {level}) cannot ban {target} (level {target_level}); "
               f"the ban level is {ban_level}")


def _check_knock(event: Event, target: str, auth_events: AuthEvents) -> str:
    rv = event.room_version
    join_rule = join_rule_of(auth_events)
    knockable = (join_rule == "knock" and rv.knock_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    )
    if not knockable:  # 4.7.1
        raise deny(rv, "member.knock.join_rule", f"the join rule {join_rule!r} forbids knocking")
    if event.sender != target:  # 4.7.2
        raise deny(rv, "member.knock.sender_mismatch",
                   f"{event.sender} cannot knock on behalf of {target}")
    current = membership_of(target, auth_events)
    if current not in ("ban", "invite", "join"):  # 4.7.3
        return "member.knock.allow"
    raise deny(rv, "member.knock.membership", f"{target} is already {current}")  # 4.7.4
