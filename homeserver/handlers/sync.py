"""``GET /sync`` (client-server-api "Syncing").

An initial sync (no ``since``) returns, for each joined room, the last
``timeline.limit`` events the user may see (``limited`` and ``prev_batch``
when there are older ones) and the full state at the start of that
timeline; invited rooms with their stripped ``invite_state``; left rooms
only with a filter's ``include_leave``. An incremental sync returns what
changed after ``since``: new timeline events, and in ``state`` the state
changes between ``since`` and the start of a ``limited`` timeline (rooms
joined since get their full state). ``ephemeral`` holds ``m.typing`` and
``m.receipt``; ``account_data`` global and per-room account data
(``m.fully_read``).

If nothing changed, the request waits up to ``timeout`` ms (on the server's
Clock) for the notifier to report news for the user's rooms or the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.events import Event
from homeserver.handlers.client_events import format_events
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.pagination import (
    START_POS,
    RoomEventFilter,
    StreamToken,
    TopologicalToken,
)
from homeserver.handlers.receipts import receipt_event
from homeserver.handlers.typing import TypingHandler
from homeserver.handlers.visibility import filter_events_for_client
from homeserver.notifier import Notifier
from storage.stores.events import StoredEvent
from storage.stores.federation_inbound import ReceivedInvite
from storage.stores.state import StateMap

__all__ = ["SyncFilter", "SyncHandler"]

JsonDict = dict[str, Any]
DEFAULT_TIMELINE_LIMIT = 10
# Invite state the spec recommends ("Stripped state").
STRIPPED_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                  "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


@dataclass(frozen=True)
class SyncFilter:
    """What Concord applies of a sync filter: ``room.timeline`` (limit,
    types, senders), ``room.include_leave``, ``room.rooms``/``not_rooms``."""

    timeline: RoomEventFilter = RoomEventFilter()
    include_leave: bool = False
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: Any) -> SyncFilter:
        if not isinstance(raw, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "filter must be a JSON object")
        room = raw.get("room", {})
        if not isinstance(room, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "filter room must be an object")
        include_leave = room.get("include_leave", False)
        if not isinstance(include_leave, bool):
            raise MatrixError(400, Codes.BAD_JSON, "include_leave must be a boolean")
        rooms = room.get("rooms")
        not_rooms = room.get("not_rooms", [])
        for v in (rooms or [], not_rooms):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise MatrixError(400, Codes.BAD_JSON, "rooms must be a list of room IDs")
        return cls(RoomEventFilter.from_json(room.get("timeline")), include_leave,
                   tuple(rooms) if rooms is not None else None, tuple(not_rooms))

    def wants_room(self, room_id: str) -> bool:
        if self.rooms is not None and room_id not in self.rooms:
            return False
        return room_id not in self.not_rooms


@dataclass
class _Ctx:
    ts: TenantStores
    user_id: str
    token_id: str | None
    since: StreamToken | None
    now: StreamToken
    full_state: bool
    flt: SyncFilter


class SyncHandler:
    def __init__(self, clock: Clock, notifier: Notifier, typing: TypingHandler) -> None:
        self._clock = clock
        self._notifier = notifier
        self._typing = typing

    async def sync(
        self, ts: TenantStores, user_id: str, *, token_id: str | None, since: str | None,
        timeout_ms: int, full_state: bool, flt: SyncFilter,
    ) -> JsonDict:
        since_tok = StreamToken.parse(since) if since else None
        deadline = self._clock.monotonic() + max(0, timeout_ms) / 1000
        while True:
            rooms = await self._user_rooms(ts, user_id)
            with self._notifier.listen(ts.server_name, user_id, rooms) as listener:
                result, news = await self._compute(ts, user_id, token_id, since_tok,
                                                   full_state, flt)
                remaining_ms = int((deadline - self._clock.monotonic()) * 1000)
                if since_tok is None or news or full_state or remaining_ms <= 0:
                    return result
                if not await listener.wait(remaining_ms):
                    return result

    async def _user_rooms(self, ts: TenantStores, user_id: str) -> list[str]:
        return await ts.s.memberships.rooms_with_membership_events(ts.server_name, user_id)

    async def current_token(self, ts: TenantStores, user_id: str) -> StreamToken:
        tenant = ts.server_name
        return StreamToken(
            await ts.s.events.get_max_stream_ordering(tenant),
            await ts.s.receipts.get_max_stream_id(tenant),
            self._typing.current_serial(tenant),
            await ts.s.account_data.get_max_stream_id(tenant),
        )

    async def _compute(
        self, ts: TenantStores, user_id: str, token_id: str | None,
        since: StreamToken | None, full_state: bool, flt: SyncFilter,
    ) -> tuple[JsonDict, bool]:
        tenant = ts.server_name
        now = await self.current_token(ts, user_id)
        ctx = _Ctx(ts, user_id, token_id, since, now, full_state, flt)
        forgotten = await ts.s.memberships.forgotten_rooms(tenant, user_id)
        join: JsonDict = {}
        invite: JsonDict = {}
        leave: JsonDict = {}
        remote = await self._remote_invites(ts, user_id)
        for room_id, (received, latest) in remote.items():
            if room_id in forgotten or not flt.wants_room(room_id):
                continue
            if latest.stream_ordering > now.events:
                continue
            changed_since = since is None or latest.stream_ordering > since.events
            if latest.event.event_id == received.event_id:
                if changed_since:
                    own = ("m.room.member", user_id)
                    invite[room_id] = {"invite_state": {"events": [
                        *(e for e in received.invite_room_state
                          if (e.get("type"), e.get("state_key")) != own),
                        _stripped_invite(latest.event),
                    ]}}
            elif since is not None and changed_since or (since is None and flt.include_leave):
                # Rejected: the leave tells a client to drop the invite.
                leave[room_id] = {
                    "timeline": {
                        "events": await self._format(ctx, [latest.event]),
                        "limited": False,
                        "prev_batch": TopologicalToken(
                            latest.event.depth, latest.stream_ordering - 1).encode(),
                    },
                    "state": {"events": []},
                    "account_data": {"events": []},
                }
        for room_id in await self._user_rooms(ts, user_id):
            if room_id in forgotten or not flt.wants_room(room_id) or room_id in remote:
                continue
            state = await ts.s.events.state.get_current_state(tenant, room_id)
            member_eid = state.get(("m.room.member", user_id))
            if member_eid is None:
                continue
            member = await ts.s.events.get_event(tenant, member_eid)
            if member is None:
                continue
            membership = member.event.content.get("membership")
            if member.stream_ordering > now.events:
                continue  # arrived after this sync's snapshot; the next one shows it
            changed_since = since is None or member.stream_ordering > since.events
            if membership == "join":
                section = await self._joined_room(ctx, room_id, member, changed_since)
                if section is not None:
                    join[room_id] = section
            elif membership == "invite":
                if changed_since:
                    invite[room_id] = {"invite_state": {
                        "events": await self._stripped_state(ts, state, member.event)
                    }}
            elif membership in ("leave", "ban"):
                if since is not None and changed_since or (since is None and flt.include_leave):
                    section = await self._left_room(ctx, room_id, member)
                    if section is not None:
                        leave[room_id] = section
        account_data = []
        if since is None or now.account_data > since.account_data:
            for entry in await ts.s.account_data.get_changed(
                tenant, user_id, since.account_data if since else 0, now.account_data
            ):
                if entry.room_id == "":
                    account_data.append({"type": entry.type, "content": entry.content})
                elif entry.room_id in join:
                    join[entry.room_id]["account_data"]["events"].append(
                        {"type": entry.type, "content": entry.content})
        news = bool(join or invite or leave or account_data)
        result: JsonDict = {
            "next_batch": now.encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": {}},
            "account_data": {"events": account_data},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
        }
        return result, news

    async def _remote_invites(
        self, ts: TenantStores, user_id: str
    ) -> dict[str, tuple[ReceivedInvite, StoredEvent]]:
        """Rooms whose last say on the user's membership is an invite received
        over federation (``PUT /v2/invite``) or the leave that rejected it:
        ``{room_id: (invite, that invite or the rejecting leave)}``.

        Both are outliers (this tenant holds none of the room's state), so the
        room's current state cannot tell. A room whose graph has a later
        membership of the user (they joined; or the invite was also received
        over ``/send`` into a room this tenant is in) is left to the state path.
        """
        tenant = ts.server_name
        latest_invite: dict[str, ReceivedInvite] = {}
        for inv in await ts.s.invites.get_invites_for_user(tenant, user_id):
            latest_invite[inv.room_id] = inv  # oldest first: the last one wins
        out: dict[str, tuple[ReceivedInvite, StoredEvent]] = {}
        for room_id, inv in latest_invite.items():
            ids = await ts.s.memberships.membership_event_ids_in(tenant, user_id, room_id)
            stored = await ts.s.events.get_stored_events(tenant, [*ids, inv.event_id])
            invite_se = stored.get(inv.event_id)
            if invite_se is None or invite_se.rejected_reason is not None:
                continue
            latest = invite_se
            for se in sorted(stored.values(), key=lambda se: se.stream_ordering):
                if se.stream_ordering <= invite_se.stream_ordering:
                    continue
                if not se.outlier:
                    latest = se
                elif (se.event.sender == user_id and se.event.depth > invite_se.event.depth
                      and se.event.membership in ("leave", "join")):
                    # The user's own answer built on the invite. An older
                    # membership fetched late as an auth event is shallower.
                    latest = se
            if latest.outlier or latest is invite_se:
                out[room_id] = (inv, latest)
        return out

    async def _timeline(
        self, ctx: _Ctx, room_id: str, *, upto: int, after: int
    ) -> tuple[list[StoredEvent], bool]:
        """The last visible events in ``(after, upto]``; ``limited`` if more exist.

        Without ``after`` (negative: an initial sync), the room's latest
        history in history order among the events stored up to ``upto``
        (backfilled events included); otherwise what was stored after
        ``after``, in stream order (what is new since the token)."""
        limit = ctx.flt.timeline.limit
        n = DEFAULT_TIMELINE_LIMIT if limit is None else limit
        if after < 0:
            rows = await ctx.ts.s.timeline.get_room_events_topo(
                ctx.ts.server_name, room_id, from_pos=None, to_pos=None, backwards=True,
                limit=n + 1, max_stream=upto,
            )
        else:
            rows = await ctx.ts.s.timeline.get_room_events(
                ctx.ts.server_name, room_id, from_pos=upto, to_pos=after, backwards=True,
                limit=n + 1,
            )
        limited = len(rows) > n
        rows = list(reversed(rows[:n]))
        visible = await filter_events_for_client(ctx.ts, ctx.user_id, rows)
        return [se for se in visible
                if ctx.flt.timeline.matches(se.event.type, se.event.sender)], limited

    async def _prev_batch(
        self, ctx: _Ctx, room_id: str, timeline: list[StoredEvent], upto: int
    ) -> str:
        """A topological token just before the timeline (its earliest event in
        history order), for ``/messages`` to continue backwards from."""
        if timeline:
            first = min(timeline, key=lambda se: (se.event.depth, se.stream_ordering))
            return TopologicalToken(first.event.depth, first.stream_ordering - 1).encode()
        pos = await ctx.ts.s.timeline.topo_position_at_stream(ctx.ts.server_name, room_id,
                                                              upto)
        return TopologicalToken.of(START_POS if pos is None else pos).encode()

    async def _format(self, ctx: _Ctx, events: list[Event]) -> list[JsonDict]:
        txn_ids = (await ctx.ts.s.txns.get_txn_ids_for_events(
            ctx.ts.server_name, ctx.token_id, [e.event_id for e in events]
        ) if ctx.token_id is not None else {})
        return await format_events(ctx.ts, events, self._clock.time_ms(),
                                   include_room_id=False, txn_ids=txn_ids)

    async def _state_events(self, ctx: _Ctx, state: Mapping[Any, str]) -> list[JsonDict]:
        events = await ctx.ts.s.events.get_events(ctx.ts.server_name, state.values())
        ordered = sorted(events.values(), key=lambda e: (e.type, e.state_key or ""))
        return await self._format(ctx, ordered)

    async def _state_at_start(
        self, ctx: _Ctx, room_id: str, timeline: list[StoredEvent], upto: int
    ) -> StateMap:
        tenant = ctx.ts.server_name
        if timeline:
            return await ctx.ts.s.events.state.get_state_group(
                tenant, timeline[0].state_group_before)
        last = await ctx.ts.s.timeline.last_event_at_or_before(tenant, room_id, upto)
        if last is None:
            return {}
        return await ctx.ts.s.events.state.get_state_group(tenant, last.state_group_after)

    async def _joined_room(
        self, ctx: _Ctx, room_id: str, member: StoredEvent, joined_since: bool
    ) -> JsonDict | None:
        ts, since, now = ctx.ts, ctx.since, ctx.now
        tenant = ts.server_name
        initial = since is None or ctx.full_state or joined_since
        after = -1 if since is None else since.events
        timeline, limited = await self._timeline(ctx, room_id, upto=now.events, after=after)
        state_events: list[JsonDict] = []
        if initial:
            start_state = await self._state_at_start(ctx, room_id, timeline, now.events)
            state_events = await self._state_events(ctx, start_state)
        elif limited and since is not None:
            start_state = await self._state_at_start(ctx, room_id, timeline, now.events)
            before = await ts.s.timeline.last_event_at_or_before(tenant, room_id, since.events)
            old = {} if before is None else await ts.s.events.state.get_state_group(
                tenant, before.state_group_after)
            delta = {k: v for k, v in start_state.items() if old.get(k) != v}
            state_events = await self._state_events(ctx, delta)
        ephemeral: list[JsonDict] = []
        typing_since = 0 if since is None else since.typing
        if since is None or room_id in self._typing.changed_rooms(
            tenant, {room_id}, typing_since
        ):
            users = self._typing.typing_users(tenant, room_id)
            if since is not None or users:
                ephemeral.append({"type": "m.typing", "content": {"user_ids": users}})
        receipts = await ts.s.receipts.get_receipts(
            tenant, [room_id], after=0 if initial or since is None else since.receipts,
            upto=now.receipts,
        )
        rec = receipt_event(receipts, ctx.user_id)
        if rec is not None:
            ephemeral.append(rec)
        if not initial and not timeline and not state_events and not ephemeral:
            return None
        return {
            "timeline": {
                "events": await self._format(ctx, [se.event for se in timeline]),
                "limited": limited,
                "prev_batch": await self._prev_batch(ctx, room_id, timeline, now.events),
            },
            "state": {"events": state_events},
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": []},
            "unread_notifications": {},
        }

    async def _left_room(self, ctx: _Ctx, room_id: str, member: StoredEvent) -> JsonDict | None:
        upto = member.stream_ordering
        after = -1 if ctx.since is None else ctx.since.events
        timeline, limited = await self._timeline(ctx, room_id, upto=upto, after=after)
        state_events: list[JsonDict] = []
        if ctx.since is None or limited:
            start = await self._state_at_start(ctx, room_id, timeline, upto)
            state_events = await self._state_events(ctx, start)
        return {
            "timeline": {
                "events": await self._format(ctx, [se.event for se in timeline]),
                "limited": limited,
                "prev_batch": await self._prev_batch(ctx, room_id, timeline, upto),
            },
            "state": {"events": state_events},
            "account_data": {"events": []},
        }

    async def _stripped_state(
        self, ts: TenantStores, state: StateMap, invite: Event
    ) -> list[JsonDict]:
        keys = [(t, "") for t in STRIPPED_TYPES] + [("m.room.member", invite.sender)]
        ids = [state[k] for k in keys if k in state]
        loaded = await ts.s.events.get_events(ts.server_name, ids)
        out: list[JsonDict] = [
            {"type": e.type, "state_key": e.state_key, "content": dict(e.content),
             "sender": e.sender}
            for e in (loaded[i] for i in ids if i in loaded)
        ]
        out.append(
            {"type": invite.type, "state_key": invite.state_key,
             "content": dict(invite.content), "sender": invite.sender,
             "event_id": invite.event_id, "origin_server_ts": invite.origin_server_ts}
        )
        return out


def _stripped_invite(invite: Event) -> JsonDict:
    """The invite itself, last in ``invite_state`` (client-server-api "Stripped
    state": the user's own membership event among the events)."""
    return {"type": invite.type, "state_key": invite.state_key,
            "content": dict(invite.content), "sender": invite.sender,
            "event_id": invite.event_id, "origin_server_ts": invite.origin_server_ts}
