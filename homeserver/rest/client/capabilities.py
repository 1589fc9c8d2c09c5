"""``GET /capabilities`` (client-server-api "Capabilities negotiation").

Room versions 10, 11 and 12 are stable; the default comes from the config's
``default_room_version``. ``m.change_password`` is reported as supported
only if the node serves ``/account/password``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.room_versions import SUPPORTED_ROOM_VERSIONS
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet
from homeserver.rest.client.client_api import ClientAPI, client_api, client_patterns

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]


class CapabilitiesServlet(Servlet):
    PATTERNS = client_patterns("/capabilities")

    def __init__(self, api: ClientAPI) -> None:
        self.api = api

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self.api.auth(request)
        change_password = any(
            getattr(r, "resource", None) is not None
            and r.resource.canonical.endswith("/account/password")  # type: ignore[union-attr]
            for r in request.app.router.routes()
        )
        return 200, {"capabilities": {
            "m.room_versions": {
                "default": self.api.hs.config.default_room_version,
                "available": {v: "stable" for v in SUPPORTED_ROOM_VERSIONS},
            },
            "m.change_password": {"enabled": change_password},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
        }}


def register(app: web.Application, hs: HomeServer) -> None:
    CapabilitiesServlet(client_api(hs)).register(app)
