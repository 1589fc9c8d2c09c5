"""Names and small lookups shared by the rule modules."""

from __future__ import annotations

from collections.abc import Mapping

from federation.events import Event

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

CREATE_KEY = (CREATE, "")
POWER_LEVELS_KEY = (POWER_LEVELS, "")
JOIN_RULES_KEY = (JOIN_RULES, "")

# m.room.member content key naming the user whose server authorised a
# restricted join (client-server-api "Restricted rooms").
AUTHORISING_USER = "join_authorised_via_users_server"

AuthEvents = Mapping[tuple[str, str], Event]
"""The events that authorise an event, keyed by ``(type, state_key)``."""


def membership_of(user_id: str, auth_events: AuthEvents) -> str | None:
    """``user_id``'s current membership, or None when they have no member event."""
    ev = auth_events.get((MEMBER, user_id))
    return ev.membership if ev is not None else None


def join_rule_of(auth_events: AuthEvents) -> str:
    """The current join rule.

    Without an ``m.room.join_rules`` event the rule is ``invite``, as in
    Synapse: the spec names no default, and ``invite`` is the reading under
    which the creator can still bring people in before setting one.
    """
    ev = auth_events.get(JOIN_RULES_KEY)
    if ev is None:
        return "invite"
    rule = ev.content.get("join_rule")
    return rule if isinstance(rule, str) else ""
