"""``GET /health``: liveness for load balancers and Docker's HEALTHCHECK.

Answers ``200 OK`` (plain text, like Synapse) once the listeners are up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="OK", content_type="text/plain")


def register(app: web.Application, hs: HomeServer) -> None:
    app.router.add_get("/health", _health)
