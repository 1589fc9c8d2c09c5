"""Queries and the published room directory.

``query.yaml`` (``GET /query/directory``, ``GET /query/profile``) and
``public_rooms.yaml`` (``GET``/``POST /publicRooms``).
"""

from __future__ import annotations

from aiohttp import web

from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.federation.context import InboundContext
from homeserver.rest.public_rooms import request_from_body, request_from_query

__all__ = ["register_servlets"]

V1 = "/_matrix/federation/v1"


class _Base(Servlet):
    def __init__(self, ctx: InboundContext) -> None:
        self._ctx = ctx

    def _who(self, request: web.Request) -> tuple[str, str]:
        tenant, origin = self._ctx.tenant(request), self._ctx.origin(request)
        self._ctx.ratelimit("query", origin)
        return tenant, origin


class QueryDirectoryServlet(_Base):
    PATTERNS = (V1 + "/query/directory",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.query_directory(
            tenant, request.query.get("room_alias"), origin
        )


class QueryProfileServlet(_Base):
    PATTERNS = (V1 + "/query/profile",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, _ = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.query_profile(
            tenant, request.query.get("user_id"), request.query.get("field")
        )


class PublicRoomsServlet(_Base):
    PATTERNS = (V1 + "/publicRooms",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, _ = self._who(request)
        query = request_from_query(request.query)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.public_rooms(tenant, query)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, _ = self._who(request)
        query = request_from_body(await read_json_body(request, allow_empty=True))
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.public_rooms(tenant, query)


def register_servlets(app: web.Application, ctx: InboundContext) -> None:
    for cls in (QueryDirectoryServlet, QueryProfileServlet, PublicRoomsServlet):
        cls(ctx).register(app)
