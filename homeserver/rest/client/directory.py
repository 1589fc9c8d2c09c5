"""Room aliases and the public room directory.

Spec: client-server-api "Room aliases" and "Listing rooms":
``PUT/GET/DELETE /directory/room/{roomAlias}``,
``GET/PUT /directory/list/room/{roomId}``, ``GET/POST /publicRooms``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import access_token_from
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.http.tenant_routing import request_tenant
from homeserver.rest.client._params import body_str
from homeserver.rest.client.client_api import ClientAPI, client_api, client_patterns
from homeserver.rest.public_rooms import request_from_body, request_from_query

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

Result = tuple[int, JsonDict]


class _Base(Servlet):
    def __init__(self, api: ClientAPI) -> None:
        self.api = api


class AliasServlet(_Base):
    PATTERNS = client_patterns("/directory/room/{alias:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        _, ts = await self.api.auth(request)
        room_id, servers = await self.api.directory.resolve_alias(
            ts, request.match_info["alias"])
        return 200, {"room_id": room_id, "servers": servers}

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        room_id = body_str(body, "room_id")
        assert room_id is not None
        await self.api.directory.create_alias(
            ts, requester.user_id, request.match_info["alias"], room_id)
        return 200, {}

    async def on_DELETE(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        await self.api.directory.delete_alias(
            ts, requester.user_id, request.match_info["alias"], is_admin=requester.is_admin)
        return 200, {}


class DirectoryListServlet(_Base):
    PATTERNS = client_patterns("/directory/list/room/{room:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        # Public information: no access token needed (spec), but the tenant
        # comes from routing, so resolve it through a token-less lookup.
        tenant = request_tenant(request)
        ts = await self.api.stores_for_tenant(tenant)
        return 200, {"visibility": await self.api.directory.get_visibility(
            ts, request.match_info["room"])}

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        body = await read_json_body(request)
        await self.api.directory.set_visibility(
            ts, requester.user_id, request.match_info["room"], body.get("visibility"))
        return 200, {}


class PublicRoomsServlet(_Base):
    PATTERNS = client_patterns("/publicRooms")

    async def on_GET(self, request: web.Request) -> Result:
        # Spec "GET /publicRooms" needs no access token. A token that is sent
        # is still checked; without one the tenant comes from routing, and
        # only its own directory is listed (asking another server for its
        # directory over federation stays a user's privilege, as in Synapse).
        server = request.query.get("server")
        if access_token_from(request) is not None:
            _, ts = await self.api.auth(request)
        else:
            tenant = request_tenant(request)
            if server not in (None, "", tenant.server_name):
                raise MatrixError(401, Codes.MISSING_TOKEN,
                                  "Listing another server's public rooms needs an access token")
            ts = await self.api.stores_for_tenant(tenant)
        return 200, await self.api.directory.public_rooms(
            ts, server, request_from_query(request.query))

    async def on_POST(self, request: web.Request) -> Result:
        _, ts = await self.api.auth(request)
        body = await read_json_body(request, allow_empty=True)
        return 200, await self.api.directory.public_rooms(
            ts, request.query.get("server"), request_from_body(body))


def register(app: web.Application, hs: HomeServer) -> None:
    api = client_api(hs)
    for cls in (AliasServlet, DirectoryListServlet, PublicRoomsServlet):
        cls(api).register(app)
