"""Admin API for the trust domain (docs/usage/trust_domain.md).

* ``GET|PUT|DELETE /_concord/admin/v1/federation/trusted_servers``: the
  node-wide setting (``federation.trusted_servers``). Needs an admin of the
  node's own server name.
* ``GET|PUT|DELETE /_concord/admin/v1/tenants/{name}/trusted_servers``: one
  tenant's. Needs an admin of the node, or of that tenant.

``PUT`` takes ``{"trusted_servers": [patterns] | null}`` (node: ``null`` is
open federation; tenant: ``null`` is "use the node-wide setting"), applies it
at once and stores it, so it survives a restart and wins over the config
until ``DELETE`` removes it. ``GET`` answers ``{"trusted_servers", "source",
"override", "config"}``. A bad pattern is 400 ``M_INVALID_PARAM`` naming it,
and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from federation.trust import TrustPatternError, TrustPolicy
from homeserver.auth import Auth
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.tenants import TenantRegistry
from homeserver.trust_domain import TrustDomain
from storage.stores.trust import NODE_SCOPE

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/admin/v1"


def _patterns(body: JsonDict) -> list[str] | None:
    if "trusted_servers" not in body:
        raise MatrixError(400, Codes.MISSING_PARAM, "trusted_servers is required (a list or null)")
    value = body["trusted_servers"]
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise MatrixError(
            400, Codes.INVALID_PARAM, "trusted_servers must be a list of strings or null"
        )
    try:
        TrustPolicy.from_patterns(value)
    except TrustPatternError as e:
        raise MatrixError(400, Codes.INVALID_PARAM, f"trusted_servers: {e}") from None
    return value


class _TrustServlet(Servlet):
    def __init__(self, auth: Auth, tenants: TenantRegistry, trust: TrustDomain) -> None:
        self._auth = auth
        self._tenants = tenants
        self._trust = trust

    async def _scope(self, request: web.Request) -> str:
        raise NotImplementedError

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        return 200, self._trust.describe(await self._scope(request))

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        scope = await self._scope(request)
        patterns = _patterns(await read_json_body(request))
        await self._trust.set_override(scope, patterns)
        return 200, self._trust.describe(scope)

    async def on_DELETE(self, request: web.Request) -> tuple[int, JsonDict]:
        scope = await self._scope(request)
        await self._trust.clear_override(scope)
        return 200, self._trust.describe(scope)


class NodeTrustServlet(_TrustServlet):
    PATTERNS = (PREFIX + "/federation/trusted_servers",)

    async def _scope(self, request: web.Request) -> str:
        requester = await self._auth.get_user_by_req(request)
        self._auth.require_server_admin(requester)
        return NODE_SCOPE


class TenantTrustServlet(_TrustServlet):
    PATTERNS = (PREFIX + "/tenants/{server_name}/trusted_servers",)

    async def _scope(self, request: web.Request) -> str:
        requester = await self._auth.get_user_by_req(request)
        name = request.match_info["server_name"]
        own = requester.tenant.server_name == name and requester.is_admin
        if not own:
            self._auth.require_server_admin(requester)
        if self._tenants.get(name) is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"no tenant named {name}")
        return name


def register(app: web.Application, hs: HomeServer) -> None:
    if hs.trust is None:
        return
    for cls in (NodeTrustServlet, TenantTrustServlet):
        cls(hs.auth, hs.tenants, hs.trust).register(app)
