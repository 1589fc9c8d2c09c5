"""Concord extension: search the discovery index across every indexed server.

``GET /_concord/client/v1/discovery/rooms?q=&limit=&since=&server=&sort=``
(docs/usage/room_discovery.md). Needs an access token of any tenant; a
tenant's users see its own rooms and those of servers in its trust domain
(another hosted name only if that one trusts the tenant too). Answers
``{"chunk": [...], "next_batch"?, "total_room_count_estimate"}``: each room
has the spec's ``PublishedRoomsChunk`` fields plus ``server`` (the directory
that lists it, a server to join through), ``server_health`` and
``last_seen_ts``. ``since`` is an opaque cursor valid for the same ``q`` and
``sort``.

Registering this module also starts the node's one discovery background task
with the client listener (and stops it with the listener).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from homeserver.auth import Auth
from homeserver.discovery.service import Discovery, discovery_for
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet
from homeserver.rest.client._params import query_int

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/client/v1"


class DiscoveryRoomsServlet(Servlet):
    PATTERNS = (PREFIX + "/discovery/rooms",)

    def __init__(self, auth: Auth, discovery: Discovery) -> None:
        self._auth = auth
        self._discovery = discovery

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        q = request.query
        server = q.get("server")
        if server is not None and not is_valid_server_name(server):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{server!r} is not a server name")
        limit = query_int(request, "limit", 20, minimum=1)
        return 200, await self._discovery.search(
            tenant=requester.tenant.server_name, query=q.get("q"), limit=limit,
            since=q.get("since") or None, server=server, sort=q.get("sort") or None,
        )


def register(app: web.Application, hs: HomeServer) -> None:
    discovery = discovery_for(hs)
    DiscoveryRoomsServlet(hs.auth, discovery).register(app)

    async def start(_: web.Application) -> None:
        discovery.start()

    async def stop(_: web.Application) -> None:
        await discovery.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
