"""Stream tokens and paginating a room's events (``/messages``, ``/context``).

Spec: client-server-api "Syncing" and "Pagination", ``GET
/rooms/{roomId}/messages`` (``from``/``to``/``dir``/``limit``/``filter``),
``GET /rooms/{roomId}/context/{eventId}``.

Tokens are opaque to clients. Concord's are ``s<events>_<receipts>_<typing>_
<account_data>``: positions in the tenant's event stream and the other
streams ``/sync`` follows. A position ``P`` of the event stream means "just
after the event whose stream ordering is ``P``"; ``/messages`` reads the
event part, so a ``next_batch``, a ``prev_batch`` and an ``end`` are
interchangeable as ``from``. Events are paginated in stream order (the order
this server received them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.handlers.client_events import format_events
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.room_access import check_event_id, check_room_id, require_read_access
from homeserver.handlers.visibility import filter_events_for_client
from storage.stores.events import StoredEvent

__all__ = ["MAX_LIMIT", "PaginationHandler", "RoomEventFilter", "StreamToken"]

JsonDict = dict[str, Any]
MAX_LIMIT = 1000


@dataclass(frozen=True)
class StreamToken:
    events: int
    receipts: int = 0
    typing: int = 0
    account_data: int = 0

    def encode(self) -> str:
        return f"s{self.events}_{self.receipts}_{self.typing}_{self.account_data}"

    @classmethod
    def parse(cls, raw: str) -> StreamToken:
        bad = MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {raw!r}")
        if not raw.startswith("s"):
            raise bad
        parts = raw[1:].split("_")
        if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) < 19 for p in parts):
            raise bad
        values = [int(p) for p in parts] + [0] * (4 - len(parts))
        return cls(*values)


@dataclass(frozen=True)
class RoomEventFilter:
    """The part of a RoomEventFilter Concord applies (``limit``, ``types``,
    ``not_types``, ``senders``, ``not_senders``); other keys are ignored."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: Any) -> RoomEventFilter:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "filter must be a JSON object")

        def strs(key: str) -> tuple[str, ...] | None:
            v = raw.get(key)
            if v is None:
                return None
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise MatrixError(400, Codes.BAD_JSON, f"filter {key} must be a list of strings")
            return tuple(v)

        limit = raw.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise MatrixError(400, Codes.BAD_JSON, "filter limit must be a non-negative integer")
        return cls(limit, strs("types"), strs("not_types") or (), strs("senders"),
                   strs("not_senders") or ())

    def matches(self, event_type: str, sender: str) -> bool:
        def hit(patterns: tuple[str, ...], value: str) -> bool:
            return any(value == p or (p.endswith("*") and value.startswith(p[:-1]))
                       for p in patterns)

        if self.types is not None and not hit(self.types, event_type):
            return False
        if hit(self.not_types, event_type):
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        return sender not in self.not_senders


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit():
        raise MatrixError(400, Codes.INVALID_PARAM, "limit must be a non-negative integer")
    return min(int(raw), MAX_LIMIT)


class PaginationHandler:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def get_messages(
        self, ts: TenantStores, user_id: str, room_id: str, *, from_token: str | None,
        to_token: str | None, direction: str, limit: int, event_filter: RoomEventFilter,
    ) -> JsonDict:
        check_room_id(room_id)
        if direction not in ("b", "f"):
            raise MatrixError(400, Codes.INVALID_PARAM, 'dir must be "b" or "f"')
        start = StreamToken.parse(from_token) if from_token else None
        end = StreamToken.parse(to_token) if to_token else None
        access = await require_read_access(ts, room_id, user_id)
        tenant = ts.server_name
        backwards = direction == "b"
        if start is None:
            from_pos = (await ts.s.events.get_max_stream_ordering(tenant)) if backwards else 0
        else:
            from_pos = start.events
        to_pos = end.events if end is not None else None
        if access.upto is not None:
            # After leaving, nothing past the leave.
            if backwards:
                from_pos = min(from_pos, access.upto)
            else:
                to_pos = access.upto if to_pos is None else min(to_pos, access.upto)
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        rows = await ts.s.timeline.get_room_events(
            tenant, room_id, from_pos=from_pos, to_pos=to_pos, backwards=backwards,
            limit=limit,
        ) if limit > 0 else []
        visible = await filter_events_for_client(ts, user_id, rows)
        chosen = [se for se in visible
                  if event_filter.matches(se.event.type, se.event.sender)]
        out: JsonDict = {
            "start": StreamToken(from_pos).encode(),
            "chunk": await format_events(ts, [se.event for se in chosen],
                                         self._clock.time_ms()),
        }
        if rows and len(rows) == limit:
            last = rows[-1].stream_ordering
            out["end"] = StreamToken(last - 1 if backwards else last).encode()
        return out

    async def get_context(
        self, ts: TenantStores, user_id: str, room_id: str, event_id: str, limit: int,
        event_filter: RoomEventFilter,
    ) -> JsonDict:
        check_room_id(room_id)
        check_event_id(event_id)
        access = await require_read_access(ts, room_id, user_id)
        tenant = ts.server_name
        stored = await ts.s.events.get_event(tenant, event_id)
        not_found = MatrixError(404, Codes.NOT_FOUND, "Event not found")
        if (stored is None or stored.event.room_id != room_id or stored.outlier
                or stored.rejected_reason is not None
                or (access.upto is not None and stored.stream_ordering > access.upto)):
            raise not_found
        if not await filter_events_for_client(ts, user_id, [stored]):
            raise not_found
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        before_n = limit // 2
        after_n = limit - before_n
        pos = stored.stream_ordering
        before = await ts.s.timeline.get_room_events(
            tenant, room_id, from_pos=pos - 1, to_pos=None, backwards=True, limit=before_n,
        ) if before_n else []
        after = await ts.s.timeline.get_room_events(
            tenant, room_id, from_pos=pos, to_pos=access.upto, backwards=False, limit=after_n,
        ) if after_n else []

        async def visible(rows: list[StoredEvent]) -> list[StoredEvent]:
            ok = await filter_events_for_client(ts, user_id, rows)
            return [se for se in ok if event_filter.matches(se.event.type, se.event.sender)]

        now = self._clock.time_ms()
        state = await ts.s.events.state.get_state_group(tenant, stored.state_group_after)
        state_events = await ts.s.events.get_events(tenant, state.values())
        start_pos = (before[-1].stream_ordering - 1) if before else pos - 1
        end_pos = after[-1].stream_ordering if after else pos
        return {
            "event": (await format_events(ts, [stored.event], now))[0],
            "events_before": await format_events(
                ts, [se.event for se in await visible(before)], now),
            "events_after": await format_events(
                ts, [se.event for se in await visible(after)], now),
            "start": StreamToken(start_pos).encode(),
            "end": StreamToken(end_pos).encode(),
            "state": await format_events(ts, state_events.values(), now),
        }
