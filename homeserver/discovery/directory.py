"""A tenant's published room directory, as federation ``publicRooms`` serves it.

Spec: server-server-api "Public Room Directory" (``public_rooms.yaml``) and
the ``PublishedRoomsChunk`` of client-server ``public_rooms_chunk.yaml``:
``room_id``, ``num_joined_members``, ``world_readable`` and
``guest_can_join`` always; ``name``, ``topic``, ``canonical_alias``,
``avatar_url``, ``join_rule`` and ``room_type`` when set. The federation
servlet and the client API's ``publicRooms`` of the tenant itself answer
from :meth:`PublishedDirectory.page`; the discovery crawler indexes this
node's own tenants from it too, without HTTP.

:class:`DirectoryRequest` is what either API's ``GET``/``POST
/publicRooms`` asks; homeserver/rest/public_rooms.py reads it from the
query string or body, checked once for both (a bad one is ``400
M_INVALID_PARAM`` before anything is read or sent on to another server).

Order: largest joined member count first, then room ID (the spec's
recommended order). Tokens are keyset positions, not offsets: ``next_batch``
means "after (members, room ID) of the last room shown", ``prev_batch``
"before the first one", so a room published or removed between two calls
shifts no other room into a duplicate or a gap.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from federation.errors import Codes, MatrixError

__all__ = ["DirectoryRequest", "PublishedDirectory", "PublishedRooms", "StateReader"]


def _bad(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


@dataclass(frozen=True)
class DirectoryRequest:
    """One ``publicRooms`` request, checked (``public_rooms.yaml`` of both APIs)."""

    #: 0 or None: no limit.
    limit: int | None = None
    since: str | None = None
    search_term: str | None = None
    #: None or empty: every room (MSC3827); None in it: rooms without a type.
    room_types: tuple[str | None, ...] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None

    def __post_init__(self) -> None:
        # Spec: third_party_instance_id "can only be used if
        # include_all_networks is false".
        if self.include_all_networks and self.third_party_instance_id is not None:
            raise _bad("third_party_instance_id cannot be used with include_all_networks")

    def search_filter(self) -> dict[str, Any]:
        """The ``filter`` to send on to another server (empty: no filter)."""
        out: dict[str, Any] = {}
        if self.search_term:
            out["generic_search_term"] = self.search_term
        if self.room_types:
            out["room_types"] = list(self.room_types)
        return out


class PublishedRooms(Protocol):
    async def public_room_ids(self, tenant: str) -> list[str]: ...


class StateReader(Protocol):
    """What the summaries need of the event store."""

    @property
    def state(self) -> Any: ...

    async def get_events(self, tenant: str, event_ids: Collection[str]) -> Mapping[str, Any]: ...


#: What ``generic_search_term`` is looked for in ("room metadata, e.g. name,
#: topic, canonical alias"), case-insensitively.
SEARCHED_FIELDS = ("name", "topic", "canonical_alias")

#: The state events a room's summary is read from (state key "").
SUMMARY_STATE_TYPES = frozenset({
    "m.room.create", "m.room.name", "m.room.topic", "m.room.canonical_alias",
    "m.room.avatar", "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
})

_Key = tuple[int, str]  # (-num_joined_members, room_id): ascending is the directory order


def _encode(direction: str, key: _Key) -> str:
    raw = json.dumps([direction, -key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Longer than any token of ours (a room ID is at most 255 bytes), and short
#: enough that no JSON nested in it can reach the parser's recursion limit.
MAX_TOKEN_CHARS = 512


def _decode(token: str) -> tuple[str, _Key]:
    bad = MatrixError(400, Codes.INVALID_PARAM, "since is not a pagination token of ours")
    if len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        direction, members, room_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise bad from None
    if direction not in ("n", "p") or type(members) is not int or not isinstance(room_id, str):
        raise bad
    return direction, (-members, room_id)


class PublishedDirectory:
    def __init__(self, events: StateReader, published: PublishedRooms | None) -> None:
        self._events = events
        self._published = published

    async def summaries(self, tenant: str) -> list[dict[str, Any]]:
        """Every published room of ``tenant`` with its summary, in directory order."""
        ids = [] if self._published is None else await self._published.public_room_ids(tenant)
        out = []
        for room_id in ids:
            summary = await self.room_summary(tenant, room_id)
            if summary is not None:
                out.append(summary)
        out.sort(key=lambda c: (-int(c["num_joined_members"]), str(c["room_id"])))
        return out

    async def page(
        self, tenant: str, request: DirectoryRequest, *, max_limit: int | None = None
    ) -> dict[str, Any]:
        """One page of the directory: ``request.limit`` rooms (0 or None:
        every room), at most ``max_limit`` if given."""
        since, search_term, room_types = request.since, request.search_term, request.room_types
        limit = request.limit
        if max_limit is not None:
            limit = min(limit or max_limit, max_limit)
        direction, key = _decode(since) if since else ("n", None)
        if request.third_party_instance_id is not None:
            # No application services bridge networks into this directory.
            return {"chunk": [], "total_room_count_estimate": 0}
        entries = await self.summaries(tenant)
        if search_term:
            # The room's metadata only: a room ID (which may end in the
            # server name) would match every room for a piece of the domain.
            term = search_term.casefold()
            entries = [
                c for c in entries
                if any(term in str(c.get(k, "")).casefold() for k in SEARCHED_FIELDS)
            ]
        if room_types:
            # MSC3827: an empty list, like none, is every room whatever its type.
            wanted = set(room_types)
            entries = [c for c in entries if c.get("room_type") in wanted]
        keys = [(-int(c["num_joined_members"]), str(c["room_id"])) for c in entries]
        if key is None:
            start, end = 0, len(entries)
        elif direction == "n":
            start, end = sum(1 for k in keys if k <= key), len(entries)
        else:
            start, end = 0, sum(1 for k in keys if k < key)
        if limit:
            if direction == "p" and key is not None:
                start = max(start, end - limit)
            else:
                end = min(end, start + limit)
        chunk = entries[start:end]
        out: dict[str, Any] = {"chunk": chunk, "total_room_count_estimate": len(entries)}
        if chunk and end < len(entries):
            out["next_batch"] = _encode("n", keys[end - 1])
        if chunk and start > 0:
            out["prev_batch"] = _encode("p", keys[start])
        return out

    async def room_summary(self, tenant: str, room_id: str) -> dict[str, Any] | None:
        current = await self._events.state.get_current_state(tenant, room_id)
        if not current:
            return None
        # Only the state the summary shows is loaded: the members are counted
        # from the current members index, not read event by event (a room of
        # thousands of members would load them all for every page).
        wanted = [e for (t, k), e in current.items() if k == "" and t in SUMMARY_STATE_TYPES]
        loaded = await self._events.get_events(tenant, wanted)
        by_key = {k: loaded[e] for k, e in current.items() if e in loaded}

        def content(event_type: str) -> Mapping[str, Any]:
            ev = by_key.get((event_type, ""))
            return ev.content if ev is not None else {}

        joined = await self._events.state.count_joined_members(tenant, room_id)
        summary: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable":
                content("m.room.history_visibility").get("history_visibility")
                == "world_readable",
            "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
            "join_rule": content("m.room.join_rules").get("join_rule", "invite"),
        }
        # An empty name or topic is unset (m.room.name, m.room.topic). The
        # chunk's canonical_alias and avatar_url have patterns (``^#``,
        # ``^mxc://``) that state content need not meet: such values are left
        # out rather than served against the schema.
        for key, event_type, field, prefix in (
            ("name", "m.room.name", "name", ""),
            ("topic", "m.room.topic", "topic", ""),
            ("canonical_alias", "m.room.canonical_alias", "alias", "#"),
            ("avatar_url", "m.room.avatar", "url", "mxc://"),
        ):
            value = content(event_type).get(field)
            if isinstance(value, str) and value and value.startswith(prefix):
                summary[key] = value
        room_type = content("m.room.create").get("type")
        if isinstance(room_type, str):
            summary["room_type"] = room_type
        return summary
