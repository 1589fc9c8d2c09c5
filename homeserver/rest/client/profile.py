"""Profiles (client-server-api "Profiles"): ``GET /profile/{userId}``,
``GET/PUT /profile/{userId}/{displayname,avatar_url}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.client.client_api import ClientAPI, client_api, client_patterns

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

Result = tuple[int, JsonDict]


class _Base(Servlet):
    def __init__(self, api: ClientAPI) -> None:
        self.api = api


class ProfileServlet(_Base):
    PATTERNS = client_patterns("/profile/{user:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        _, ts = await self.api.auth(request)
        return 200, await self.api.profiles.get_profile(ts, request.match_info["user"])


class ProfileFieldServlet(_Base):
    PATTERNS = client_patterns("/profile/{user:[^/]+}/{field:displayname|avatar_url}")

    async def on_GET(self, request: web.Request) -> Result:
        _, ts = await self.api.auth(request)
        field = request.match_info["field"]
        profile = await self.api.profiles.get_profile(ts, request.match_info["user"])
        if field not in profile:
            raise MatrixError(404, Codes.NOT_FOUND, f"No {field} set")
        return 200, {field: profile[field]}

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        field = request.match_info["field"]
        body = await read_json_body(request)
        if field not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing {field}")
        await self.api.profiles.set_field(
            ts, requester.user_id, request.match_info["user"], field, body[field],
            is_admin=requester.is_admin,
        )
        return 200, {}


def register(app: web.Application, hs: HomeServer) -> None:
    api = client_api(hs)
    for cls in (ProfileServlet, ProfileFieldServlet):
        cls(api).register(app)
