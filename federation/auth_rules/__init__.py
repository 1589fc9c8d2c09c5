"""Matrix authorisation rules for room versions 10, 11 and 12.

Spec: ``rooms/v10.md``, ``rooms/v11.md``, ``rooms/v12.md`` ("Authorisation
rules"), ``server-server-api.md`` ("Auth events selection"),
``rooms/fragments/v3-handling-redactions.md``.

Pure functions over :class:`~federation.events.Event`; room-version
differences are read only through flags of :mod:`federation.room_versions`.

Typical use on receipt of a PDU::

    keyed = check_auth_events_selection(event, auth_events_by_id)  # rules 2.x
    check_auth(event, keyed)                                       # the rest
    check_auth(event, state_before)                                # soft-failure check

Modules, one per spec concept: ``selection`` (auth events selection, rule 2),
``create`` (rule 1, v12 rule 2, ``m.federate``), ``member`` (rule 4),
``third_party`` (4.4.1 and rule 6), ``power`` (levels and rule 9),
``redaction`` (handling redactions), ``check`` (the sequence), ``catalogue``
(rule ids, spec numbers, :class:`AuthError`).
"""

from federation.auth_rules.catalogue import RULES, AuthError, Rule, rules_for
from federation.auth_rules.check import authorising_rule, check_auth
from federation.auth_rules.member import is_membership_change_allowed
from federation.auth_rules.power import (
    get_named_level,
    get_power_level,
    get_send_level,
    get_user_power_level,
    room_creators,
)
from federation.auth_rules.redaction import can_apply_redaction
from federation.auth_rules.selection import auth_types_for_event, check_auth_events_selection

__all__ = [
    "RULES",
    "AuthError",
    "Rule",
    "auth_types_for_event",
    "authorising_rule",
    "can_apply_redaction",
    "check_auth",
    "check_auth_events_selection",
    "get_named_level",
    "get_power_level",
    "get_send_level",
    "get_user_power_level",
    "is_membership_change_allowed",
    "room_creators",
    "rules_for",
]
