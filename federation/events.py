"""Events (PDUs) as plain data with a thin, read-only view.

Spec: ``server-server-api.md`` "PDUs", and the event formats
``definitions/pdu_v6.yaml`` (v10), ``pdu_v11.yaml`` (v11), ``pdu_v12.yaml`` (v12).

An :class:`Event` keeps the JSON exactly as received (it is what gets hashed,
signed and stored) and exposes the fields auth rules and state resolution read.
It never mutates the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.event_format import check_pdu_format
from federation.hashes import compute_event_id
from federation.room_versions import RoomVersion, get_room_version


class Event:
    """A PDU, its event ID and its room version.

    ``pdu`` is the event JSON as received or built (without ``event_id``: in
    room versions 10-12 the ID is derived from the reference hash).
    """

    __slots__ = ("pdu", "event_id", "room_version", "rejected_reason")

    def __init__(
        self,
        pdu: Mapping[str, Any],
        event_id: str,
        room_version: RoomVersion,
        rejected_reason: str | None = None,
    ) -> None:
        self.pdu = pdu
        self.event_id = event_id
        self.room_version = room_version
        self.rejected_reason = rejected_reason

    def __repr__(self) -> str:
        return f"<Event {self.event_id} {self.type} state_key={self.state_key!r}>"

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def state_key(self) -> str | None:
        sk = self.pdu.get("state_key")
        return sk if isinstance(sk, str) else None

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def room_id(self) -> str:
        """The room ID; for a v12 create event, "!" + its reference hash."""
        room_id = self.pdu.get("room_id")
        if room_id is None and self.room_version.room_id_from_create_event:
            if self.type == "m.room.create" and self.state_key == "":
                return "!" + self.event_id[1:]
        return str(room_id)

    @property
    def content(self) -> Mapping[str, Any]:
        c = self.pdu.get("content")
        return c if isinstance(c, Mapping) else {}

    @property
    def depth(self) -> int:
        return int(self.pdu.get("depth", 0))

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu.get("origin_server_ts", 0))

    @property
    def prev_event_ids(self) -> list[str]:
        return [str(e) for e in self.pdu.get("prev_events", [])]

    @property
    def auth_event_ids(self) -> list[str]:
        return [str(e) for e in self.pdu.get("auth_events", [])]

    @property
    def redacts(self) -> str | None:
        """The event a redaction redacts: a content key from v11 on."""
        if self.room_version.redacts_in_content:
            r = self.content.get("redacts")
        else:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def membership(self) -> str | None:
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def state_tuple(self) -> tuple[str, str]:
        """``(type, state_key)``; only meaningful for state events."""
        return (self.type, self.state_key or "")

    @property
    def origin_server_name(self) -> str:
        """The server part of the sender, which must have signed the event."""
        return self.sender.split(":", 1)[1]


def event_from_pdu(pdu: Mapping[str, Any], room_version: RoomVersion | str) -> Event:
    """Check ``pdu``'s format for its room version and wrap it with its computed event ID.

    Spec: ``rooms/fragments/v4-event-ids.md`` (the ID is the reference hash).
    No signature or hash checks: for received events use
    ``federation.signing.verify_pdu``. ``room_version`` may be an identifier,
    refused with ``M_UNSUPPORTED_ROOM_VERSION`` if not one Concord supports.
    Raises ``EventFormatError`` (``M_BAD_JSON``) for a malformed PDU.
    """
    rv = get_room_version(room_version) if isinstance(room_version, str) else room_version
    check_pdu_format(pdu, rv)
    return Event(pdu, compute_event_id(pdu, rv), rv)
