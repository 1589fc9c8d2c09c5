"""``PUT /_matrix/federation/v1/send/{txnId}`` (``transactions.yaml``)."""

from __future__ import annotations

from aiohttp import web

from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.federation.context import InboundContext

__all__ = ["SendTransactionServlet", "register_servlets"]


class SendTransactionServlet(Servlet):
    PATTERNS = ("/_matrix/federation/v1/send/{txn_id}",)

    def __init__(self, ctx: InboundContext) -> None:
        self._ctx = ctx

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        origin, tenant = self._ctx.origin(request), self._ctx.tenant(request)
        self._ctx.ratelimit("send", origin)
        body = await read_json_body(request)
        handler = (await self._ctx.handlers(tenant)).transactions
        return 200, await handler.on_send(tenant, origin, request.match_info["txn_id"], body)


def register_servlets(app: web.Application, ctx: InboundContext) -> None:
    SendTransactionServlet(ctx).register(app)
