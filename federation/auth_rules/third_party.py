"""Third-party invites.

Spec: rule 4.4.1 (v12: 5.4.1), an ``m.room.member`` invite carrying
``content.third_party_invite``; and rule 6 (v12: 7), the
``m.room.third_party_invite`` event itself. Client-server "Third-party invites".

Concord does not support redeeming third-party invites: it does not verify
the identity server's signature over ``third_party_invite.signed``. So after
the structural checks 4.4.1.1-4.4.1.6 (which give precise reasons), the
signature step 4.4.1.7, the only one that can allow, refuses instead. Sending
``m.room.third_party_invite`` events (rule 6) works as specified.
"""

from __future__ import annotations

from collections.abc import Mapping

from federation.auth_rules._common import THIRD_PARTY_INVITE, AuthEvents, membership_of
from federation.auth_rules.catalogue import deny
from federation.auth_rules.power import get_named_level, get_power_level
from federation.events import Event


def check_third_party_invite_membership(event: Event, auth_events: AuthEvents) -> None:
    """Rule 4.4.1: always raises (see the module docstring)."""
    rv = event.room_version
    target = event.state_key or ""
    if membership_of(target, auth_events) == "ban":  # 4.4.1.1
        raise deny(rv, "member.invite.3pid.banned", f"{target} is banned")
    tpi = event.content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):  # 4.4.1.2
        raise deny(rv, "member.invite.3pid.no_signed", "third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):  # 4.4.1.3
        raise deny(rv, "member.invite.3pid.signed_fields",
                   "third_party_invite.signed lacks a string mxid or token")
    if mxid != target:  # 4.4.1.4
        raise deny(rv, "member.invite.3pid.mxid", f"signed.mxid {mxid} is not {target}")
    invite_event = auth_events.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:  # 4.4.1.5
        raise deny(rv, "member.invite.3pid.no_token_event",
                   f"no m.room.third_party_invite with state_key {token!r}")
    if invite_event.sender != event.sender:  # 4.4.1.6
        raise deny(rv, "member.invite.3pid.sender",
                   f"{event.sender} did not send the m.room.third_party_invite "
                   f"({invite_event.sender} did)")
    raise deny(rv, "member.invite.3pid.unsupported",
               "Concord does not support third-party invites: it does not verify "
               "third_party_invite.signed blobs, so the invite is refused")


def check_third_party_invite_event(event: Event, auth_events: AuthEvents) -> str:
    """Rule 6.1 (v12: 7.1): allowed iff the sender has the *invite level*."""
    level = get_power_level(event.sender, auth_events)
    needed = get_named_level(auth_events, "invite")
    if level >= needed:
        return "third_party_invite.invite_level"
    raise deny(event.room_version, "third_party_invite.invite_level",
               f"{event.sender} has level {level}, below the invite level {needed}")
