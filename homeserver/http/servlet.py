"""The servlet shape (cf. Synapse's RestServlet): route patterns plus ``on_<METHOD>``.

A servlet parses HTTP and calls one handler; it never touches the database.
``on_GET(request)`` (and PUT/POST/DELETE) returns ``(status, json_object)``;
errors are raised as :class:`~federation.errors.MatrixError`. Read a JSON
body with :func:`homeserver.http.json.read_json_body`.

    class WhoAmIServlet(Servlet):
        PATTERNS = ("/_matrix/client/v3/account/whoami",)

        def __init__(self, auth: Auth) -> None:
            self._auth = auth

        async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
            ...

    def register(app: web.Application, hs: HomeServer) -> None:
        WhoAmIServlet(Auth(...)).register(app)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import web

from homeserver.http.json import JsonDict, json_response

__all__ = ["Servlet"]

_METHODS = ("GET", "PUT", "POST", "DELETE")


class Servlet:
    #: aiohttp route patterns, e.g. ``/_matrix/client/v3/rooms/{room_id}/state``.
    PATTERNS: ClassVar[tuple[str, ...]] = ()

    def register(self, app: web.Application) -> None:
        if not self.PATTERNS:
            raise TypeError(f"{type(self).__name__} has no PATTERNS")
        for method in _METHODS:
            impl = getattr(self, f"on_{method}", None)
            if impl is None:
                continue
            handler = self._wrap(impl)
            for pattern in self.PATTERNS:
                app.router.add_route(method, pattern, handler)

    @staticmethod
    def _wrap(
        impl: Callable[[web.Request], Awaitable[tuple[int, JsonDict]]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            result: Any = await impl(request)
            if isinstance(result, web.StreamResponse):
                return result
            code, body = result
            return json_response(code, body)

        return handler
