"""Whether a redaction should be applied.

Spec: ``rooms/fragments/v3-handling-redactions.md`` ("Handling redactions",
v3 onwards). The auth rules themselves treat ``m.room.redaction`` like any
other event (send level via ``events``/``events_default``; the *redact level*
is not considered there). This second check is what decides whether the
server actually prunes the target once both events are known and valid.
"""

from __future__ import annotations

from federation.auth_rules._common import AuthEvents
from federation.auth_rules._ids import domain_of
from federation.auth_rules.power import get_named_level, get_power_level
from federation.events import Event


def can_apply_redaction(redaction: Event, redacted: Event, auth_events: AuthEvents) -> bool:
    """Whether ``redaction`` (already accepted) may redact ``redacted``.

    ``auth_events`` is the state the redaction was authorised against (its
    power levels and create event). True if the sender has the *redact level*,
    or the sender's server is the redacted event's sender's server.
    """
    if redaction.type != "m.room.redaction" or redaction.redacts != redacted.event_id:
        return False
    if redaction.room_id != redacted.room_id:
        return False
    if get_power_level(redaction.sender, auth_events) >= get_named_level(auth_events, "redact"):
        return True
    return domain_of(redaction.sender) == domain_of(redacted.sender)
