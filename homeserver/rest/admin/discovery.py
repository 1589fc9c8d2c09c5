"""Admin API for room discovery (docs/usage/room_discovery.md).

All need an admin of the node's own server name:

* ``GET /_concord/admin/v1/discovery/peers``: every crawled peer with its
  health, why it is crawled, its last crawl and its room count;
* ``GET /_concord/admin/v1/discovery/peers/{server}``: one, with its health
  history;
* ``PUT /_concord/admin/v1/discovery/peers/{server}``: crawl it too (it must
  be in some hosted name's trust domain to be crawled);
* ``DELETE /_concord/admin/v1/discovery/peers/{server}``: stop crawling a
  peer added here (404 if it was not added here; peers from the trust domain
  or ``discovery.peers`` are changed in the config);
* ``POST /_concord/admin/v1/discovery/crawl`` and ``.../probe``: run a round
  now and answer its results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.discovery.service import Discovery, discovery_for
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/admin/v1/discovery"


class _Base(Servlet):
    def __init__(self, auth: Auth, discovery: Discovery) -> None:
        self._auth = auth
        self._discovery = discovery

    async def _admin(self, request: web.Request) -> None:
        requester = await self._auth.get_user_by_req(request)
        self._auth.require_server_admin(requester)


class PeersServlet(_Base):
    PATTERNS = (PREFIX + "/peers",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._admin(request)
        return 200, {"peers": await self._discovery.describe_peers()}


class PeerServlet(_Base):
    PATTERNS = (PREFIX + "/peers/{server}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._admin(request)
        server = request.match_info["server"]
        found = await self._discovery.describe_peer(server)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"{server} is not a discovery peer")
        return 200, found

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._admin(request)
        server = request.match_info["server"]
        await self._discovery.add_peer(server)
        found = await self._discovery.describe_peer(server)
        return 200, found or {}

    async def on_DELETE(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._admin(request)
        server = request.match_info["server"]
        if not await self._discovery.remove_peer(server):
            raise MatrixError(
                404, Codes.NOT_FOUND,
                f"{server} was not added through the admin API (peers from the trust domain "
                "or discovery.peers are changed in the config)",
            )
        return 200, {}


class RoundServlet(_Base):
    PATTERNS = (PREFIX + "/{action:crawl|probe}",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._admin(request)
        if request.match_info["action"] == "crawl":
            return 200, {"results": await self._discovery.crawl_once()}
        return 200, {"states": await self._discovery.probe_once()}


def register(app: web.Application, hs: HomeServer) -> None:
    discovery = discovery_for(hs)
    for cls in (PeersServlet, PeerServlet, RoundServlet):
        cls(hs.auth, discovery).register(app)
