"""Joining, leaving and inviting over federation.

``joins-v2.yaml`` (``GET /v1/make_join``, ``PUT /v2/send_join``),
``leaving-v2.yaml`` (``GET /v1/make_leave``, ``PUT /v2/send_leave``),
``invites-v2.yaml`` (``PUT /v2/invite``). The v1 ``send_join``/``send_leave``
and ``invite`` are not served: they exist for room versions 1-2 and servers
that predate v2, neither of which Concord federates with.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.federation.context import InboundContext

__all__ = ["register_servlets"]


class _Base(Servlet):
    def __init__(self, ctx: InboundContext) -> None:
        self._ctx = ctx

    def _who(self, request: web.Request) -> tuple[str, str]:
        tenant, origin = self._ctx.tenant(request), self._ctx.origin(request)
        # Every servlet here is a membership request: one token each.
        self._ctx.ratelimit("join", origin)
        return tenant, origin


class MakeJoinServlet(_Base):
    PATTERNS = ("/_matrix/federation/v1/make_join/{room_id}/{user_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        # joins-v1.yaml: "If not provided, the room version is assumed to be
        # either '1' or '2'."
        versions = request.query.getall("ver", []) or ["1"]
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.make_membership(
            tenant, origin, request.match_info["room_id"], request.match_info["user_id"],
            "join", versions,
        )


class MakeLeaveServlet(_Base):
    PATTERNS = ("/_matrix/federation/v1/make_leave/{room_id}/{user_id}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.make_membership(
            tenant, origin, request.match_info["room_id"], request.match_info["user_id"],
            "leave", None,
        )


class SendJoinServlet(_Base):
    PATTERNS = ("/_matrix/federation/v2/send_join/{room_id}/{event_id}",)

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        pdu = await read_json_body(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.send_join(
            tenant, origin, request.match_info["room_id"], request.match_info["event_id"], pdu
        )


class SendLeaveServlet(_Base):
    PATTERNS = ("/_matrix/federation/v2/send_leave/{room_id}/{event_id}",)

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        pdu = await read_json_body(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.send_leave(
            tenant, origin, request.match_info["room_id"], request.match_info["event_id"], pdu
        )


class InviteServlet(_Base):
    PATTERNS = ("/_matrix/federation/v2/invite/{room_id}/{event_id}",)

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, origin = self._who(request)
        body = await read_json_body(request)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.on_invite_request(
            tenant, origin, request.match_info["room_id"], request.match_info["event_id"], body
        )


def register_servlets(app: web.Application, ctx: InboundContext) -> None:
    for cls in (MakeJoinServlet, MakeLeaveServlet, SendJoinServlet, SendLeaveServlet,
                InviteServlet):
        cls(ctx).register(app)
