"""The Server-Server API endpoints other servers call (``/_matrix/federation``).

Spec: ``server-server-api.md`` and ``data/api/server-server/*.yaml``. Every
request has passed X-Matrix authentication (:mod:`homeserver.http.x_matrix`)
before a servlet here runs; servlets read the authenticated origin, the
tenant the request was addressed to, the path and query, and call one
handler method. ``/version`` lives in :mod:`homeserver.rest.federation_version`.

Modules: ``transactions`` (``/send``), ``events`` (``/event``, ``/state``,
``/state_ids``, ``/event_auth``, ``/backfill``, ``/get_missing_events``),
``membership`` (``make_join``/``send_join``, ``make_leave``/``send_leave``,
``invite``), ``queries`` (``query/directory``, ``query/profile``,
``publicRooms``). :mod:`.context` builds the handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from homeserver.http.x_matrix import authenticated_origin
from homeserver.rest.federation import events, membership, queries, transactions
from homeserver.rest.federation.context import InboundContext

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]


def register(app: web.Application, hs: HomeServer) -> None:
    ctx = InboundContext.for_homeserver(hs)
    for module in (transactions, events, membership, queries):
        module.register_servlets(app, ctx)

    @web.middleware
    async def peer_seen(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            # Runs inside the X-Matrix middleware: an origin here is
            # authenticated, and up, whatever we answered it (a 404 too).
            try:
                origin: str | None = authenticated_origin(request)
            except RuntimeError:  # /_matrix/key/: not authenticated
                origin = None
            if origin is not None:
                await ctx.peer_seen(origin)

    app.middlewares.append(peer_seen)
