"""Pagination tokens and paginating a room's history (``/messages``, ``/context``).

Spec: client-server-api "Syncing" and "Pagination", ``GET
/rooms/{roomId}/messages`` (``from``/``to``/``dir``/``limit``/``filter``),
``GET /rooms/{roomId}/context/{eventId}``.

Tokens are opaque to clients. Two kinds, like Synapse's:

- *stream tokens* ``s<events>_<receipts>_<typing>_<account_data>``:
  positions in the tenant's streams, what ``/sync`` hands out as
  ``next_batch`` and takes as ``since``;
- *topological tokens* ``t<depth>-<stream>``: a position in the room's
  history order ``(depth, stream_ordering)``, meaning "just after the event
  at that position". ``/messages`` and ``/context`` answer with these
  (``start``, ``end``), and ``/sync`` gives one as ``prev_batch``.

``/messages`` walks history order, so events this server received late
(fetched with ``/backfill`` or ``/get_missing_events``) appear where they
belong. It takes either kind as ``from``/``to``: a stream token stands for
the position just after the room's last event (in history order) among
those stored at or before it. Paginating backwards past the earliest event
this server holds asks another server in the room for older history first
(:class:`RoomBackfiller`; docs/development/event_graph.md, "History order").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from federation.canonical_json import CANONICAL_INT_MAX
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.handlers.client_events import format_events
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.room_access import check_event_id, check_room_id, require_read_access
from homeserver.handlers.visibility import filter_events_for_client
from storage.stores.events import StoredEvent
from storage.stores.room_timeline import TopoPos

__all__ = [
    "MAX_LIMIT",
    "PaginationHandler",
    "RoomBackfiller",
    "RoomEventFilter",
    "StreamToken",
    "TopologicalToken",
    "parse_pagination_token",
]

JsonDict = dict[str, Any]
MAX_LIMIT = 1000
#: Backfill requests one ``/messages`` call may make before answering.
MAX_BACKFILL_ROUNDS = 3
_MAX_STREAM = 2**62
#: Before every event (depths are at least 0).
START_POS: TopoPos = (-1, 0)


def _bad_token(raw: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, f"Invalid pagination token {raw!r}")


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
        bad = _bad_token(raw)
        if not raw.startswith("s"):
            raise bad
        parts = raw[1:].split("_")
        if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) < 19 for p in parts):
            raise bad
        values = [int(p) for p in parts] + [0] * (4 - len(parts))
        return cls(*values)


_TOPO = re.compile(r"t(-?[0-9]{1,19})-(-?[0-9]{1,19})")


@dataclass(frozen=True)
class TopologicalToken:
    """``t<depth>-<stream>``: just after the event at ``(depth, stream)`` in
    history order. The stream part is negative for backfilled events
    (Synapse writes its topological tokens the same way)."""

    depth: int
    stream: int

    @property
    def pos(self) -> TopoPos:
        return (self.depth, self.stream)

    def encode(self) -> str:
        return f"t{self.depth}-{self.stream}"

    @classmethod
    def of(cls, pos: TopoPos) -> TopologicalToken:
        return cls(pos[0], pos[1])

    @classmethod
    def parse(cls, raw: str) -> TopologicalToken:
        m = _TOPO.fullmatch(raw)
        if m is None:
            raise _bad_token(raw)
        depth, stream = int(m[1]), int(m[2])
        if not -1 <= depth <= CANONICAL_INT_MAX or not -_MAX_STREAM <= stream <= _MAX_STREAM:
            raise _bad_token(raw)
        return cls(depth, stream)


def parse_pagination_token(raw: str) -> StreamToken | TopologicalToken:
    """A ``from``/``to`` of ``/messages``: either kind; 400 ``M_INVALID_PARAM`` otherwise."""
    if raw.startswith("t"):
        return TopologicalToken.parse(raw)
    return StreamToken.parse(raw)


def _before(se: StoredEvent) -> TopoPos:
    """The position just before ``se`` (stream orderings are integers)."""
    return (se.event.depth, se.stream_ordering - 1)


def _at(se: StoredEvent) -> TopoPos:
    return (se.event.depth, se.stream_ordering)


class RoomBackfiller(Protocol):
    """Fetches older history of a room from other servers (federation's side)."""

    async def backfill(
        self, ts: TenantStores, room_id: str, *, max_depth: int | None, limit: int
    ) -> int:
        """Backfill from the room's backward extremities whose referring event
        is at most ``max_depth`` deep (``None``: any); returns how many events
        were stored as history."""


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
    def __init__(self, clock: Clock, backfiller: RoomBackfiller | None = None) -> None:
        self._clock = clock
        self._backfiller = backfiller

    async def _resolve(
        self, ts: TenantStores, room_id: str, token: StreamToken | TopologicalToken
    ) -> TopoPos:
        if isinstance(token, TopologicalToken):
            return token.pos
        pos = await ts.s.timeline.topo_position_at_stream(ts.server_name, room_id,
                                                          token.events)
        return START_POS if pos is None else pos

    async def get_messages(
        self, ts: TenantStores, user_id: str, room_id: str, *, from_token: str | None,
        to_token: str | None, direction: str, limit: int, event_filter: RoomEventFilter,
    ) -> JsonDict:
        check_room_id(room_id)
        if direction not in ("b", "f"):
            raise MatrixError(400, Codes.INVALID_PARAM, 'dir must be "b" or "f"')
        start = parse_pagination_token(from_token) if from_token else None
        end = parse_pagination_token(to_token) if to_token else None
        access = await require_read_access(ts, room_id, user_id)
        tenant = ts.server_name
        backwards = direction == "b"
        timeline = ts.s.timeline
        from_pos = None if start is None else await self._resolve(ts, room_id, start)
        to_pos = None if end is None else await self._resolve(ts, room_id, end)
        if access.upto_topo is not None:
            # After leaving, nothing past the leave.
            if backwards:
                from_pos = access.upto_topo if from_pos is None else min(from_pos,
                                                                         access.upto_topo)
            else:
                to_pos = access.upto_topo if to_pos is None else min(to_pos, access.upto_topo)
        if from_pos is None:
            if backwards:
                top = await timeline.topo_position_at_stream(tenant, room_id, _MAX_STREAM)
                from_pos = START_POS if top is None else top
            else:
                from_pos = START_POS
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)

        async def page() -> list[StoredEvent]:
            if limit <= 0:
                return []
            return await timeline.get_room_events_topo(
                tenant, room_id, from_pos=from_pos, to_pos=to_pos, backwards=backwards,
                limit=limit,
            )

        rows = await page()
        if backwards and self._backfiller is not None and limit > 0:
            for _ in range(MAX_BACKFILL_ROUNDS):
                if not await self._needs_backfill(ts, room_id, from_pos, rows, limit):
                    break
                got = await self._backfiller.backfill(
                    ts, room_id, max_depth=from_pos[0] + 1, limit=limit)
                if not got:
                    break
                rows = await page()
        visible = await filter_events_for_client(ts, user_id, rows)
        chosen = [se for se in visible
                  if event_filter.matches(se.event.type, se.event.sender)]
        out: JsonDict = {
            "start": TopologicalToken.of(from_pos).encode(),
            "chunk": await format_events(ts, [se.event for se in chosen],
                                         self._clock.time_ms()),
        }
        if rows and len(rows) == limit:
            last = rows[-1]
            out["end"] = TopologicalToken.of(_before(last) if backwards else _at(last)).encode()
        return out

    @staticmethod
    async def _needs_backfill(
        ts: TenantStores, room_id: str, from_pos: TopoPos, rows: list[StoredEvent], limit: int
    ) -> bool:
        """Whether history the page should show may be missing here: a backward
        extremity below ``from_pos`` and, for a full page, above its last event."""
        extremities = await ts.s.events.get_backward_extremities(
            ts.server_name, room_id, max_depth=from_pos[0] + 1)
        if not extremities:
            return False
        if len(rows) < limit:
            return True
        lowest = rows[-1].event.depth
        # An extremity's depth is its child's: the missing event lies below.
        return any(depth > lowest for _, depth in extremities)

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
                or access.hides(stored.event.depth, stored.stream_ordering)):
            raise not_found
        if not await filter_events_for_client(ts, user_id, [stored]):
            raise not_found
        if event_filter.limit is not None:
            limit = min(limit, event_filter.limit)
        before_n = limit // 2
        after_n = limit - before_n
        timeline = ts.s.timeline
        before = await timeline.get_room_events_topo(
            tenant, room_id, from_pos=_before(stored), to_pos=None, backwards=True,
            limit=before_n,
        ) if before_n else []
        after = await timeline.get_room_events_topo(
            tenant, room_id, from_pos=_at(stored), to_pos=access.upto_topo, backwards=False,
            limit=after_n,
        ) if after_n else []

        async def visible(rows: list[StoredEvent]) -> list[StoredEvent]:
            ok = await filter_events_for_client(ts, user_id, rows)
            return [se for se in ok if event_filter.matches(se.event.type, se.event.sender)]

        now = self._clock.time_ms()
        state = await ts.s.events.state.get_state_group(tenant, stored.state_group_after)
        state_events = await ts.s.events.get_events(tenant, state.values())
        start_pos = _before(before[-1]) if before else _before(stored)
        end_pos = _at(after[-1]) if after else _at(stored)
        return {
            "event": (await format_events(ts, [stored.event], now))[0],
            "events_before": await format_events(
                ts, [se.event for se in await visible(before)], now),
            "events_after": await format_events(
                ts, [se.event for se in await visible(after)], now),
            "start": TopologicalToken.of(start_pos).encode(),
            "end": TopologicalToken.of(end_pos).encode(),
            "state": await format_events(ts, state_events.values(), now),
        }
