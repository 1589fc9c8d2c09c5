"""The catalogue of authorisation rules, and the error that names the one that failed.

Spec: ``rooms/v10.md``, ``rooms/v11.md``, ``rooms/v12.md``, "Authorisation rules".

Every rule has a stable short id (``member.join.banned``) used in code, logs and
test vectors, and a spec number that depends on the room version: v12 inserted
rule 2 (the room ID is the create event's ID), so every later top-level number
moved up by one. The numbering column is chosen through that flag,
``rv.room_id_from_create_event``, never by comparing version strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from federation.errors import Codes, MatrixError
from federation.room_versions import RoomVersion

Outcome = Literal["allow", "deny", "both"]


def _always(rv: RoomVersion) -> bool:
    return True


def _classic_numbering(rv: RoomVersion) -> bool:
    return not rv.room_id_from_create_event


def _v12_numbering(rv: RoomVersion) -> bool:
    return rv.room_id_from_create_event


def _explicit_creator(rv: RoomVersion) -> bool:
    return not rv.implicit_room_creator


def _privileged_creators(rv: RoomVersion) -> bool:
    return rv.privileged_room_creators


def _create_allow_number(rv: RoomVersion) -> str:
    # "Otherwise, allow" comes after the last create check: v10 has 1.4
    # (creator), v11 has none, v12 has 1.4 (additional_creators).
    extra_check = (not rv.implicit_room_creator) or rv.privileged_room_creators
    return "1.5" if extra_check else "1.4"


@dataclass(frozen=True)
class Rule:
    """One numbered rule: stable id, spec numbers, and what it can decide."""

    id: str
    # Number in the v10/v11 text, and in the v12 text (rule 2 inserted).
    classic: str | Callable[[RoomVersion], str]
    v12: str | Callable[[RoomVersion], str]
    outcome: Outcome
    summary: str
    applies: Callable[[RoomVersion], bool] = _always

    def number(self, rv: RoomVersion) -> str:
        n = self.v12 if rv.room_id_from_create_event else self.classic
        return n(rv) if callable(n) else n


_RULES: tuple[Rule, ...] = (
    # Rule 1: m.room.create.
    Rule("create.prev_events", "1.1", "1.1", "deny", "create event has prev_events"),
    Rule("create.room_id_domain", "1.2", "-", "deny",
         "room_id domain differs from sender domain", _classic_numbering),
    Rule("create.room_id_present", "-", "1.2", "deny",
         "v12 create event has a room_id", _v12_numbering),
    Rule("create.room_version", "1.3", "1.3", "deny", "content.room_version not recognised"),
    Rule("create.creator_missing", "1.4", "-", "deny",
         "content has no creator", _explicit_creator),
    Rule("create.additional_creators", "-", "1.4", "deny",
         "additional_creators is not an array of valid user IDs", _privileged_creators),
    Rule("create.allow", _create_allow_number, _create_allow_number, "allow",
         "create event allowed"),
    # v12 rule 2.
    Rule("room_id.create_event", "-", "2", "deny",
         "room_id is not the ID of an accepted create event", _v12_numbering),
    # Rule 2 (v12: 3): the event's auth_events.
    Rule("auth_events.missing", "2", "3", "deny", "an auth event is not available"),
    Rule("auth_events.duplicate", "2.1", "3.1", "deny", "duplicate (type, state_key)"),
    Rule("auth_events.unexpected", "2.2", "3.2", "deny",
         "entry not chosen by auth events selection"),
    Rule("auth_events.rejected", "2.3", "3.3", "deny", "an auth event was rejected"),
    Rule("auth_events.no_create", "2.4", "-", "deny",
         "no m.room.create among auth events", _classic_numbering),
    Rule("auth_events.room_id", "2.5", "3.5", "deny", "auth event from another room"),
    # Rule 3 (v12: 4).
    Rule("federate", "3", "4", "deny", "m.federate is false and sender is remote"),
    # Rule 4 (v12: 5): m.room.member.
    Rule("member.malformed", "4.1", "5.1", "deny", "no state_key or no membership"),
    Rule("member.authoriser_signature", "4.2.1", "5.2.1", "deny",
         "not signed by the join_authorised_via_users_server server"),
    Rule("member.join.creator_first", "4.3.1", "5.3.1", "allow", "creator's first join"),
    Rule("member.join.sender_mismatch", "4.3.2", "5.3.2", "deny", "sender is not state_key"),
    Rule("member.join.banned", "4.3.3", "5.3.3", "deny", "sender is banned"),
    Rule("member.join.invited", "4.3.4", "5.3.4", "allow",
         "invite/knock room, sender invited or joined"),
    Rule("member.join.restricted.member", "4.3.5.1", "5.3.5.1", "allow",
         "restricted room, sender invited or joined"),
    Rule("member.join.restricted.authoriser", "4.3.5.2", "5.3.5.2", "deny",
         "authorising user not joined or lacks invite power"),
    Rule("member.join.restricted.allow", "4.3.5.3", "5.3.5.3", "allow",
         "restricted join authorised"),
    Rule("member.join.public", "4.3.6", "5.3.6", "allow", "public room"),
    Rule("member.join.not_allowed", "4.3.7", "5.3.7", "deny", "join rule does not allow"),
    Rule("member.invite.3pid.banned", "4.4.1.1", "5.4.1.1", "deny", "3pid target banned"),
    Rule("member.invite.3pid.no_signed", "4.4.1.2", "5.4.1.2", "deny", "3pid has no signed"),
    Rule("member.invite.3pid.signed_fields", "4.4.1.3", "5.4.1.3", "deny",
         "signed lacks mxid or token"),
    Rule("member.invite.3pid.mxid", "4.4.1.4", "5.4.1.4", "deny", "mxid is not state_key"),
    Rule("member.invite.3pid.no_token_event", "4.4.1.5", "5.4.1.5", "deny",
         "no m.room.third_party_invite for token"),
    Rule("member.invite.3pid.sender", "4.4.1.6", "5.4.1.6", "deny",
         "sender did not send the m.room.third_party_invite"),
    Rule("member.invite.3pid.unsupported", "4.4.1.7", "5.4.1.7", "deny",
         "Concord does not verify third_party_invite signed blobs"),
    Rule("member.invite.sender_not_joined", "4.4.2", "5.4.2", "deny", "inviter not joined"),
    Rule("member.invite.target_state", "4.4.3", "5.4.3", "deny", "target joined or banned"),
    Rule("member.invite.allow", "4.4.4", "5.4.4", "allow", "inviter has invite level"),
    Rule("member.invite.power", "4.4.5", "5.4.5", "deny", "inviter lacks invite level"),
    Rule("member.leave.self", "4.5.1", "5.5.1", "both", "leave self iff invite/join/knock"),
    Rule("member.leave.sender_not_joined", "4.5.2", "5.5.2", "deny", "kicker not joined"),
    Rule("member.leave.unban_power", "4.5.3", "5.5.3", "deny", "unban below ban level"),
    Rule("member.leave.kick", "4.5.4", "5.5.4", "allow", "kick with enough power"),
    Rule("member.leave.power", "4.5.5", "5.5.5", "deny", "kick without enough power"),
    Rule("member.ban.sender_not_joined", "4.6.1", "5.6.1", "deny", "banner not joined"),
    Rule("member.ban.allow", "4.6.2", "5.6.2", "allow", "ban with enough power"),
    Rule("member.ban.power", "4.6.3", "5.6.3", "deny", "ban without enough power"),
    Rule("member.knock.join_rule", "4.7.1", "5.7.1", "deny", "room does not allow knocking"),
    Rule("member.knock.sender_mismatch", "4.7.2", "5.7.2", "deny", "sender is not state_key"),
    Rule("member.knock.allow", "4.7.3", "5.7.3", "allow", "knock allowed"),
    Rule("member.knock.membership", "4.7.4", "5.7.4", "deny", "already banned/invited/joined"),
    Rule("member.unknown", "4.8", "5.8", "deny", "unknown membership"),
    # Rules 5-8 (v12: 6-9).
    Rule("sender_not_joined", "5", "6", "deny", "sender is not joined"),
    Rule("third_party_invite.invite_level", "6.1", "7.1", "both",
         "m.room.third_party_invite iff invite level"),
    Rule("send_level", "7", "8", "deny", "sender below the event type's required level"),
    Rule("state_key.user", "8", "9", "deny", "state_key starting with @ is not the sender"),
    # Rule 9 (v12: 10): m.room.power_levels.
    Rule("power_levels.int_fields", "9.1", "10.1", "deny", "a named level is not an integer"),
    Rule("power_levels.maps", "9.2", "10.2", "deny",
         "events/notifications not an object of integers"),
    Rule("power_levels.users", "9.3", "10.3", "deny",
         "users not an object of valid user IDs to integers"),
    Rule("power_levels.creator_in_users", "-", "10.4", "deny",
         "a room creator is listed in users", _privileged_creators),
    Rule("power_levels.initial", "9.4", "10.5", "allow", "no previous power levels"),
    Rule("power_levels.named.current", "9.5.1", "10.6.1", "deny",
         "changed named level's current value above sender"),
    Rule("power_levels.named.new", "9.5.2", "10.6.2", "deny",
         "changed named level's new value above sender"),
    Rule("power_levels.events.current", "9.6.1", "10.7.1", "deny",
         "changed events/notifications entry's current value above sender"),
    Rule("power_levels.events.new", "9.7.1", "10.8.1", "deny",
         "new events/notifications entry's value above sender"),
    Rule("power_levels.users.current", "9.8.1", "10.9.1", "deny",
         "changed user's current level at or above sender"),
    Rule("power_levels.users.new", "9.9.1", "10.10.1", "deny",
         "new user level above sender"),
    Rule("power_levels.allow", "9.10", "10.11", "allow", "power levels change allowed"),
    # Rule 10 (v12: 11).
    Rule("default.allow", "10", "11", "allow", "no rule rejected the event"),
)

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def rules_for(rv: RoomVersion) -> list[Rule]:
    """The rules that exist in room version ``rv``, in catalogue order."""
    return [r for r in _RULES if r.applies(rv)]


class AuthError(MatrixError):
    """An event failed the authorisation rules: 403 ``M_FORBIDDEN``.

    ``rule`` is the stable id from :data:`RULES`; ``spec_rule`` is the number
    in the room version's text ("v12 5.3.3"), when the version is known.
    """

    def __init__(
        self, rule: str, reason: str, *, room_version: RoomVersion | None = None
    ) -> None:
        self.rule = rule
        self.reason = reason
        known = RULES.get(rule)
        self.spec_rule: str | None = None
        if known is not None and room_version is not None:
            self.spec_rule = f"v{room_version.identifier} {known.number(room_version)}"
        label = f"{self.spec_rule} ({rule})" if self.spec_rule else rule
        super().__init__(403, Codes.FORBIDDEN, f"Auth rule {label} failed: {reason}")


def deny(rv: RoomVersion, rule: str, reason: str) -> AuthError:
    """Build the :class:`AuthError` for ``rule``; the caller raises it."""
    if rule not in RULES:  # a typo here would silently lose the spec number
        raise KeyError(f"unknown auth rule id {rule!r}")
    return AuthError(rule, reason, room_version=rv)
