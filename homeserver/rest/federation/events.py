"""Events, state and history for other servers.

``events.yaml`` (``GET /event/{eventId}``, ``GET /state/{roomId}``,
``GET /state_ids/{roomId}``), ``event_auth.yaml``, ``backfill.yaml``
(``GET /backfill/{roomId}``, ``POST /get_missing_events/{roomId}``).
"""

from __future__ import annotations

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.federation.context import InboundContext

__all__ = ["register_servlets"]

V1 = "/_matrix/federation/v1"


class _Base(Servlet):
    def __init__(self, ctx: InboundContext) -> None:
        self._ctx = ctx

    def _who(self, request: web.Request) -> tuple[str, str]:
        return self._ctx.tenant(request), self._ctx.origin(request)


class EventServlet(_Base):
    PATTERNS = (V1 + "/event/{event_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.get_event(tenant, origin, request.match_info["event_id"])


class StateServlet(_Base):
    PATTERNS = (V1 + "/state/{room_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.get_state(
            tenant, origin, request.match_info["room_id"], request.query.get("event_id")
        )


class StateIdsServlet(_Base):
    PATTERNS = (V1 + "/state_ids/{room_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.get_state_ids(
            tenant, origin, request.match_info["room_id"], request.query.get("event_id")
        )


class EventAuthServlet(_Base):
    PATTERNS = (V1 + "/event_auth/{room_id}/{event_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.get_event_auth(
            tenant, origin, request.match_info["room_id"], request.match_info["event_id"]
        )


class BackfillServlet(_Base):
    PATTERNS = (V1 + "/backfill/{room_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        raw_limit = request.query.get("limit")
        if raw_limit is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "limit is required")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be an integer") from None
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.backfill(
            tenant, origin, request.match_info["room_id"], request.query.getall("v", []), limit
        )


class GetMissingEventsServlet(_Base):
    PATTERNS = (V1 + "/get_missing_events/{room_id}",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        body = await read_json_body(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.get_missing_events(
            tenant, origin, request.match_info["room_id"], body
        )


def register_servlets(app: web.Application, ctx: InboundContext) -> None:
    for cls in (EventServlet, StateServlet, StateIdsServlet, EventAuthServlet,
                BackfillServlet, GetMissingEventsServlet):
        cls(ctx).register(app)
