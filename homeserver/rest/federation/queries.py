"""Queries and the published room directory.

``query.yaml`` (``GET /query/directory``, ``GET /query/profile``) and
``public_rooms.yaml`` (``GET``/``POST /publicRooms``).
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


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be an integer") from None
    if type(value) is not int or value < 0:
        raise MatrixError(400, Codes.INVALID_PARAM, "limit must be a non-negative integer")
    return value


class PublicRoomsServlet(_Base):
    PATTERNS = (V1 + "/publicRooms",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, _ = self._who(request)
        q = request.query
        _networks(_bool_param(q.get("include_all_networks"), "include_all_networks"),
                  q.get("third_party_instance_id"))
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.public_rooms(
            tenant, limit=_limit(q.get("limit")), since=q.get("since"),
            third_party_instance_id=q.get("third_party_instance_id"),
        )

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant, _ = self._who(request)
        body = await read_json_body(request, allow_empty=True)
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise MatrixError(400, Codes.INVALID_PARAM, "since must be a string")
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise MatrixError(400, Codes.INVALID_PARAM, "filter must be an object")
        term = flt.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise MatrixError(400, Codes.INVALID_PARAM, "generic_search_term must be a string")
        room_types = flt.get("room_types")
        if room_types is not None and (
            not isinstance(room_types, list)
            or not all(t is None or isinstance(t, str) for t in room_types)
        ):
            raise MatrixError(400, Codes.INVALID_PARAM,
                              "room_types must be a list of strings and nulls")
        networks = body.get("include_all_networks", False)
        if not isinstance(networks, bool):
            raise MatrixError(400, Codes.INVALID_PARAM, "include_all_networks must be a boolean")
        instance = body.get("third_party_instance_id")
        if instance is not None and not isinstance(instance, str):
            raise MatrixError(400, Codes.INVALID_PARAM,
                              "third_party_instance_id must be a string")
        _networks(networks, instance)
        server = (await self._ctx.handlers(tenant)).server
        return 200, await server.public_rooms(
            tenant, limit=_limit(body.get("limit")), since=since, search_term=term,
            room_types=room_types, third_party_instance_id=instance,
        )


def _bool_param(value: str | None, name: str) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be true or false")


def _networks(include_all_networks: bool, third_party_instance_id: str | None) -> None:
    """Spec: ``third_party_instance_id`` "can only be used if
    ``include_all_networks`` is false"."""
    if include_all_networks and third_party_instance_id is not None:
        raise MatrixError(400, Codes.INVALID_PARAM,
                          "third_party_instance_id cannot be used with include_all_networks")


def register_servlets(app: web.Application, ctx: InboundContext) -> None:
    for cls in (QueryDirectoryServlet, QueryProfileServlet, PublicRoomsServlet):
        cls(ctx).register(app)
