"""The room-version table: every per-version difference, read through named flags.

Spec: ``rooms/_index.md`` ("Room versions", feature matrix) and the pages of
each version, ``rooms/v10.md``, ``rooms/v11.md``, ``rooms/v12.md``.

Each version is written as a ``dataclasses.replace`` of its predecessor, so a
new version is one entry that names only what changes. Code asks
``rv.updated_redaction_rules``; it never compares version strings.

Concord supports 10, 11 and 12. Versions 1-9 are recognised (so the error can
say "known but not supported") and refused with ``M_UNSUPPORTED_ROOM_VERSION``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from federation.errors import Codes, MatrixError


class StateResAlgorithm(StrEnum):
    V2 = "v2"
    # v12's revision: conflicted subgraph, and iterative auth checks starting
    # from the empty state (rooms/v12.md, "State resolution").
    V2_1 = "v2.1"


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    stable: bool
    state_res: StateResAlgorithm
    # Event IDs are the URL-safe unpadded base64 reference hash (v4+).
    event_id_is_reference_hash: bool
    # v6: strict canonical JSON, integer range enforced.
    strict_canonical_json: bool
    # v5: a key's valid_until_ts must cover the event's origin_server_ts.
    enforce_key_validity: bool
    # v7 / v8 / v10: join rules.
    knock_join_rule: bool
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    # v10: power level values must be integers, not strings.
    enforce_int_power_levels: bool
    # v6: notifications key of power levels is protected by redaction & auth.
    limit_notifications_power_levels: bool
    # v11 (MSC2176/MSC3821/MSC3989): the updated redaction algorithm.
    updated_redaction_rules: bool
    # v11 (MSC2174): `redacts` is a content key, not a top-level key.
    redacts_in_content: bool
    # v11 (MSC2175): m.room.create has no `creator`; the sender is the creator.
    implicit_room_creator: bool
    # v12 (MSC4291): room ID is "!" + the create event's reference hash, and the
    # create event has no room_id and is never listed in auth_events.
    room_id_from_create_event: bool
    # v12 (MSC4289): creators (sender + additional_creators) have infinite power.
    privileged_room_creators: bool


ROOM_V10 = RoomVersion(
    identifier="10",
    stable=True,
    state_res=StateResAlgorithm.V2,
    event_id_is_reference_hash=True,
    strict_canonical_json=True,
    enforce_key_validity=True,
    knock_join_rule=True,
    restricted_join_rule=True,
    knock_restricted_join_rule=True,
    enforce_int_power_levels=True,
    limit_notifications_power_levels=True,
    updated_redaction_rules=False,
    redacts_in_content=False,
    implicit_room_creator=False,
    room_id_from_create_event=False,
    privileged_room_creators=False,
)

ROOM_V11 = dataclasses.replace(
    ROOM_V10,
    identifier="11",
    updated_redaction_rules=True,
    redacts_in_content=True,
    implicit_room_creator=True,
)

ROOM_V12 = dataclasses.replace(
    ROOM_V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    room_id_from_create_event=True,
    privileged_room_creators=True,
)

SUPPORTED_ROOM_VERSIONS: dict[str, RoomVersion] = {
    rv.identifier: rv for rv in (ROOM_V10, ROOM_V11, ROOM_V12)
}

# rooms/_index.md: "servers SHOULD create rooms as v12 by default".
DEFAULT_ROOM_VERSION = ROOM_V12

# Versions the spec defines that Concord recognises but does not implement.
KNOWN_UNSUPPORTED_ROOM_VERSIONS = frozenset(str(n) for n in range(1, 10))


def get_room_version(identifier: object) -> RoomVersion:
    """The :class:`RoomVersion` for ``identifier``, or ``M_UNSUPPORTED_ROOM_VERSION``."""
    if isinstance(identifier, str):
        rv = SUPPORTED_ROOM_VERSIONS.get(identifier)
        if rv is not None:
            return rv
    supported = ", ".join(SUPPORTED_ROOM_VERSIONS)
    if identifier in KNOWN_UNSUPPORTED_ROOM_VERSIONS:
        msg = (
            f"Room version {identifier} is a known Matrix room version but is not "
            f"supported by this server (supported: {supported})"
        )
    else:
        msg = f"Unknown room version {identifier!r} (supported: {supported})"
    raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, msg)
