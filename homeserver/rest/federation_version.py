"""``GET /_matrix/federation/v1/version`` (server-server ``version.yaml``).

Behind X-Matrix authentication like everything under ``/_matrix/federation/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver import __version__
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet
from homeserver.http.x_matrix import authenticated_origin

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["FederationVersionServlet", "register"]


class FederationVersionServlet(Servlet):
    PATTERNS = ("/_matrix/federation/v1/version",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        authenticated_origin(request)  # fails loudly if mounted outside the auth middleware
        return 200, {"server": {"name": "Concord", "version": __version__}}


def register(app: web.Application, hs: HomeServer) -> None:
    FederationVersionServlet().register(app)
