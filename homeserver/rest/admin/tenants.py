"""``/_concord/admin/v1/tenants``: manage the node's tenants at run time.

Needs the access token of a *server* admin: an admin account of the node's
own ``server_name`` (``homeserver register-user --admin``). Admins of other
tenants get 403 ``M_FORBIDDEN``, as does everyone else.

* ``GET  /tenants``: ``{"tenants": [...]}``
* ``POST /tenants``: ``{"server_name", "mode"?, "database_url"?,
  "client_hostnames"?, "enable_registration"?, "quotas"?}``, 200 with the tenant
* ``GET /tenants/{name}``, ``DELETE /tenants/{name}``
* ``POST /tenants/{name}/suspend``, ``POST /tenants/{name}/resume``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.client.register import body_bool, body_str
from homeserver.tenants import Quotas, TenantError, TenantRegistry, TenantState

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/admin/v1/tenants"
_QUOTA_KEYS = ("max_users", "max_rooms", "max_events_per_minute")


def _tenant_error(e: TenantError) -> MatrixError:
    if e.not_found:
        return MatrixError(404, Codes.NOT_FOUND, str(e))
    return MatrixError(400, Codes.INVALID_PARAM, str(e))


def _quotas(raw: Any) -> Quotas:
    if raw is None:
        return Quotas()
    if not isinstance(raw, dict):
        raise MatrixError(400, Codes.INVALID_PARAM, "quotas must be an object")
    for key, value in raw.items():
        if key in _QUOTA_KEYS:
            least = Quotas.MINIMUMS[key]
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < least
            ):
                raise MatrixError(
                    400, Codes.INVALID_PARAM,
                    f"quotas.{key} must be an integer of at least {least}",
                )
        elif key == "admin_contact":
            if value is not None and not isinstance(value, str):
                raise MatrixError(400, Codes.INVALID_PARAM, "quotas.admin_contact must be a string")
        else:
            raise MatrixError(400, Codes.INVALID_PARAM, f"unknown quota {key!r}")
    return Quotas.from_json(raw)


class _AdminServlet(Servlet):
    def __init__(self, auth: Auth, tenants: TenantRegistry) -> None:
        self._auth = auth
        self._tenants = tenants

    async def _require(self, request: web.Request) -> None:
        requester = await self._auth.get_user_by_req(request)
        self._auth.require_server_admin(requester)


class TenantsServlet(_AdminServlet):
    PATTERNS = (PREFIX,)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        return 200, {"tenants": [t.to_json() for t in self._tenants.all()]}

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        body = await read_json_body(request)
        server_name = body_str(body, "server_name", required=True)
        assert server_name is not None
        mode = body_str(body, "mode") or "shared"
        database_url = body_str(body, "database_url")
        hostnames = body.get("client_hostnames", [])
        if not isinstance(hostnames, list) or not all(isinstance(h, str) for h in hostnames):
            raise MatrixError(
                400, Codes.INVALID_PARAM, "client_hostnames must be a list of strings"
            )
        try:
            tenant = await self._tenants.create(
                server_name,
                mode=mode,
                database_url=database_url,
                client_hostnames=hostnames,
                quotas=_quotas(body.get("quotas")),
                enable_registration=body_bool(body, "enable_registration"),
            )
        except TenantError as e:
            raise _tenant_error(e) from None
        return 200, tenant.to_json()


class TenantServlet(_AdminServlet):
    PATTERNS = (PREFIX + "/{server_name}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        name = request.match_info["server_name"]
        tenant = self._tenants.get(name)
        if tenant is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"no tenant named {name}")
        return 200, tenant.to_json()

    async def on_DELETE(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        try:
            await self._tenants.remove(request.match_info["server_name"])
        except TenantError as e:
            raise _tenant_error(e) from None
        return 200, {}


class TenantStateServlet(_AdminServlet):
    PATTERNS = (PREFIX + "/{server_name}/{action:suspend|resume}",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        state = (
            TenantState.SUSPENDED
            if request.match_info["action"] == "suspend"
            else TenantState.ACTIVE
        )
        try:
            tenant = await self._tenants.set_state(request.match_info["server_name"], state)
        except TenantError as e:
            raise _tenant_error(e) from None
        return 200, tenant.to_json()


def register(app: web.Application, hs: HomeServer) -> None:
    for cls in (TenantsServlet, TenantServlet, TenantStateServlet):
        cls(hs.auth, hs.tenants).register(app)
