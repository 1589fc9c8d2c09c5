"""``GET /_matrix/client/versions``.

Client-Server API, "API Versions": the spec versions this server supports
(clients pick the highest they share) and unstable features it enables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["SUPPORTED_VERSIONS", "VersionsServlet", "register"]

SUPPORTED_VERSIONS = tuple(f"v1.{n}" for n in range(1, 13))


class VersionsServlet(Servlet):
    PATTERNS = ("/_matrix/client/versions",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        return 200, {"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}}


def register(app: web.Application, hs: HomeServer) -> None:
    VersionsServlet().register(app)
