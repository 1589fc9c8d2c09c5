"""Which tenant a request is for: the tenant-resolution middleware.

Issue "Client-server API and tenants", Tenants:

* client listener: by the ``Host`` header, the tenant's server name or one
  of its ``client_hostnames`` (the port compared only when the configured
  name carries one). A node with one tenant sends every host to it. An
  unknown host answers 404 ``M_UNRECOGNIZED`` naming the host; a suspended
  tenant answers 403 ``M_FORBIDDEN``. ``/health`` is served whatever the host.
* federation listener: by the X-Matrix ``destination`` the origin signed
  (:func:`homeserver.http.x_matrix.request_destination`; the X-Matrix
  middleware, which runs first, refuses names not in the registry). A
  suspended tenant's federation answers 403 ``M_FORBIDDEN``. The key
  endpoints stay open: peers still need a suspended tenant's keys to check
  the events it signed.

Servlets read the result with :func:`request_tenant`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from federation.errors import Codes, MatrixError
from homeserver.http.x_matrix import (
    FEDERATION_PREFIX,
    UNAUTHENTICATED_PATHS,
    is_authenticated,
    request_destination,
)
from homeserver.tenants import Tenant

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from homeserver.tenants import TenantRegistry

__all__ = [
    "client_tenant_middleware",
    "federation_tenant_middleware",
    "register_client",
    "register_federation",
    "request_tenant",
]

_TENANT = web.RequestKey("concord.tenant", Tenant)

# Served whatever the Host: load balancers and container health checks.
_HOST_INDEPENDENT = ("/health",)


def request_tenant(request: web.Request) -> Tenant:
    """The tenant this request was routed to (set by the middleware)."""
    tenant: Tenant | None = request.get(_TENANT)
    if tenant is None:
        # A servlet mounted where the middleware does not run: a bug.
        raise RuntimeError(f"{request.path} was not routed to a tenant")
    return tenant


def _suspended(tenant: Tenant) -> MatrixError:
    return MatrixError(
        403,
        Codes.FORBIDDEN,
        f"{tenant.server_name} is suspended on this server; contact its operator",
    )


def client_tenant_middleware(*, registry: TenantRegistry) -> Middleware:
    """Route client-listener requests by Host."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _HOST_INDEPENDENT:
            return await handler(request)
        host = request.headers.get("Host")
        tenant = registry.for_host(host)
        if tenant is None:
            raise MatrixError(
                404, Codes.UNRECOGNIZED, f"{host or '(no Host header)'} is not hosted here"
            )
        if not tenant.is_active:
            raise _suspended(tenant)
        request[_TENANT] = tenant
        return await handler(request)

    return middleware


def federation_tenant_middleware(*, registry: TenantRegistry) -> Middleware:
    """Route federation requests by their authenticated destination."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        unsigned = request.path in UNAUTHENTICATED_PATHS and not is_authenticated(request)
        if request.path.startswith(FEDERATION_PREFIX) and not unsigned:
            destination = request_destination(request)
            tenant = registry.get(destination)
            if tenant is None:
                # Removed between the X-Matrix check and now.
                raise MatrixError(404, Codes.UNRECOGNIZED, f"{destination} is not hosted here")
            if not tenant.is_active:
                raise _suspended(tenant)
            request[_TENANT] = tenant
        else:
            host = request.headers.get("Host", "")
            request[_TENANT] = registry.get(host) or registry.primary
        return await handler(request)

    return middleware


def register_client(app: web.Application, hs: HomeServer) -> None:
    app.middlewares.append(client_tenant_middleware(registry=hs.tenants))


def register_federation(app: web.Application, hs: HomeServer) -> None:
    """Install after :func:`homeserver.http.x_matrix.register` (it needs the destination)."""
    app.middlewares.append(federation_tenant_middleware(registry=hs.tenants))
