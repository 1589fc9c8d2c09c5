"""Room endpoints of the Client-Server API (v3, with r0 aliases).

Spec: client-server-api "Creation", "Room membership", "Sending events to a
room", "Getting events for a room", "Redactions", "Typing Notifications",
"Receipts", "Fully read markers". Each servlet authenticates, parses, and
calls one handler (``homeserver/handlers/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.handlers.client_events import format_client_event
from homeserver.handlers.pagination import RoomEventFilter, parse_limit
from homeserver.handlers.room_access import check_room_id, require_joined
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.client._params import body_str, query_json, query_str
from homeserver.rest.client.client_api import ClientAPI, client_api, client_patterns

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

Result = tuple[int, JsonDict]


def _token_id(requester: Any) -> str:
    return str(requester.token_id)


class _Base(Servlet):
    def __init__(self, api: ClientAPI) -> None:
        self.api = api


class CreateRoomServlet(_Base):
    PATTERNS = client_patterns("/createRoom")

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        return 200, await self.api.rooms.create_room(ts, requester.user_id, body)


class JoinServlet(_Base):
    PATTERNS = (*client_patterns("/join/{room:[^/]+}"),
                *client_patterns("/rooms/{room:[^/]+}/join"))

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        servers = request.query.getall("server_name", []) + request.query.getall("via", [])
        room_id = await self.api.members.join(
            ts, requester.user_id, request.match_info["room"], servers, body.get("reason")
        )
        return 200, {"room_id": room_id}


class MembershipServlet(_Base):
    """``/rooms/{roomId}/{invite,leave,kick,ban,unban,forget}``."""

    PATTERNS = client_patterns(
        "/rooms/{room:[^/]+}/{action:invite|leave|kick|ban|unban|forget}"
    )

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        room_id, action = request.match_info["room"], request.match_info["action"]
        m, user = self.api.members, requester.user_id
        reason = body.get("reason")
        if action == "leave":
            await m.leave(ts, user, room_id, reason)
            # A rejection over federation persists no event of the room's
            # graph, so no event hook wakes the user's other /sync requests.
            self.api.notifier.notify(ts.server_name, user_ids=[user])
        elif action == "forget":
            await m.forget(ts, user, room_id)
        else:
            if "user_id" not in body:
                raise MatrixError(400, Codes.MISSING_PARAM, "Missing user_id")
            target = body["user_id"]
            fn = {"invite": m.invite, "kick": m.kick, "ban": m.ban, "unban": m.unban}[action]
            await fn(ts, user, room_id, target, reason)
        return 200, {}


class SendServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/send/{type:[^/]+}/{txn:[^/]+}")

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        event_id = await self.api.messages.send_message(
            ts, requester.user_id, request.match_info["room"], request.match_info["type"],
            body, token_id=_token_id(requester), txn_id=request.match_info["txn"],
        )
        return 200, {"event_id": event_id}


class StateServlet(_Base):
    PATTERNS = (
        *client_patterns("/rooms/{room:[^/]+}/state/{type:[^/]+}"),
        *client_patterns("/rooms/{room:[^/]+}/state/{type:[^/]+}/{state_key:.*}"),
    )

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        ev = await self.api.messages.get_state_event(
            ts, requester.user_id, request.match_info["room"], request.match_info["type"],
            request.match_info.get("state_key", ""),
        )
        if request.query.get("format") == "event":
            return 200, format_client_event(ev, self.api.hs.clock.time_ms())
        return 200, dict(ev.content)

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        event_id = await self.api.messages.send_state(
            ts, requester.user_id, request.match_info["room"], request.match_info["type"],
            request.match_info.get("state_key", ""), body,
        )
        return 200, {"event_id": event_id}


class AllStateServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/state")

    async def on_GET(self, request: web.Request) -> Any:
        requester, ts = await self.api.auth(request)
        events = await self.api.messages.get_state(
            ts, requester.user_id, request.match_info["room"])
        return 200, events


class RedactServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/redact/{event:[^/]+}/{txn:[^/]+}")

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        event_id = await self.api.messages.redact(
            ts, requester.user_id, request.match_info["room"], request.match_info["event"],
            body_str(body, "reason", required=False),
            token_id=_token_id(requester), txn_id=request.match_info["txn"],
        )
        return 200, {"event_id": event_id}


class EventServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/event/{event:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        return 200, await self.api.messages.get_event(
            ts, requester.user_id, request.match_info["room"], request.match_info["event"],
            _token_id(requester),
        )


class MessagesServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/messages")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        return 200, await self.api.pagination.get_messages(
            ts, requester.user_id, request.match_info["room"],
            from_token=query_str(request, "from"), to_token=query_str(request, "to"),
            direction=request.query.get("dir", "b"),
            limit=parse_limit(request.query.get("limit"), 10),
            event_filter=RoomEventFilter.from_json(query_json(request, "filter")),
        )


class ContextServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/context/{event:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        return 200, await self.api.pagination.get_context(
            ts, requester.user_id, request.match_info["room"], request.match_info["event"],
            parse_limit(request.query.get("limit"), 10),
            RoomEventFilter.from_json(query_json(request, "filter")),
        )


MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


class MembersServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/members")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        for param in ("membership", "not_membership"):
            # Spec "GET /members": one of join, invite, knock, leave, ban.
            value = request.query.get(param)
            if value is not None and value not in MEMBERSHIPS:
                raise MatrixError(400, Codes.INVALID_PARAM,
                                  f"{param} must be one of {', '.join(MEMBERSHIPS)}")
        chunk = await self.api.messages.get_members(
            ts, requester.user_id, request.match_info["room"],
            membership=request.query.get("membership"),
            not_membership=request.query.get("not_membership"),
        )
        return 200, {"chunk": chunk}


class JoinedMembersServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/joined_members")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        joined = await self.api.messages.get_joined_members(
            ts, requester.user_id, request.match_info["room"])
        return 200, {"joined": joined}


class JoinedRoomsServlet(_Base):
    PATTERNS = client_patterns("/joined_rooms")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        return 200, {"joined_rooms": await self.api.messages.joined_rooms(
            ts, requester.user_id)}


class TypingServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/typing/{user:[^/]+}")

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        room_id, user = request.match_info["room"], request.match_info["user"]
        if user != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "You may only set your own typing state")
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise MatrixError(400, Codes.BAD_JSON if "typing" in body else Codes.MISSING_PARAM,
                              "typing must be a boolean")
        timeout = body.get("timeout", 30_000)
        if typing and (not isinstance(timeout, int) or isinstance(timeout, bool)
                       or timeout < 0):
            raise MatrixError(400, Codes.BAD_JSON, "timeout must be a non-negative integer")
        check_room_id(room_id)
        await require_joined(ts, room_id, requester.user_id)
        self.api.typing.set_typing(ts.server_name, room_id, requester.user_id, typing,
                                   timeout if typing else 0)
        await self.api.send_edu_to_room(ts.server_name, room_id, "m.typing", {
            "room_id": room_id, "user_id": requester.user_id, "typing": typing,
        })
        return 200, {}


class ReceiptServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/receipt/{type:[^/]+}/{event:[^/]+}")

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        await self.api.receipts.post_receipt(
            ts, requester.user_id, request.match_info["room"], request.match_info["type"],
            request.match_info["event"], body.get("thread_id"),
        )
        return 200, {}


class ReadMarkersServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/read_markers")

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        await self.api.receipts.read_markers(
            ts, requester.user_id, request.match_info["room"], body)
        return 200, {}


class RoomAliasesServlet(_Base):
    PATTERNS = client_patterns("/rooms/{room:[^/]+}/aliases")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        return 200, {"aliases": await self.api.directory.room_aliases(
            ts, requester.user_id, request.match_info["room"])}


SERVLETS: tuple[type[_Base], ...] = (
    CreateRoomServlet, JoinServlet, MembershipServlet, SendServlet, AllStateServlet,
    StateServlet, RedactServlet, EventServlet, MessagesServlet, ContextServlet,
    MembersServlet, JoinedMembersServlet, JoinedRoomsServlet, TypingServlet, ReceiptServlet,
    ReadMarkersServlet, RoomAliasesServlet,
)


def register(app: web.Application, hs: HomeServer) -> None:
    api = client_api(hs)
    for cls in SERVLETS:
        cls(api).register(app)

    async def close(_app: web.Application) -> None:
        # Typing expiry timers sleep on the Clock; end them with the listener.
        await api.close()

    app.on_cleanup.append(close)
