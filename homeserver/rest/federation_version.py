"""``GET /_matrix/federation/v1/version`` (server-server ``version.yaml``).

The spec gives it no security requirement: the X-Matrix middleware lets it
through without an ``Authorization`` header (and still checks one that is
sent), so anyone, ``homeserver federation-test`` or curl, can ask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver import __version__
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["FederationVersionServlet", "register"]


class FederationVersionServlet(Servlet):
    PATTERNS = ("/_matrix/federation/v1/version",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        return 200, {"server": {"name": "Concord", "version": __version__}}


def register(app: web.Application, hs: HomeServer) -> None:
    FederationVersionServlet().register(app)
