"""The trust-domain check on the federation listener.

Docs: docs/usage/trust_domain.md. Runs before X-Matrix authentication
(:mod:`homeserver.http.x_matrix`) and reads only the ``Authorization``
header: a request whose claimed origin is outside the addressed name's
trust domain is refused with 403 ``M_FORBIDDEN`` (the message names the
server and the rule) before its body is read, any key is fetched or
anything is stored. A header that does not parse is left to the X-Matrix
middleware (401). The key endpoints stay open: a server outside the domain
may still read our public keys, as anyone can.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from federation.errors import Codes, MatrixError
from federation.transport.wire import XMatrixAuthError, parse_authorization_header
from homeserver.http.x_matrix import FEDERATION_PREFIX
from homeserver.trust_domain import TrustDomain

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register", "trust_middleware"]

logger = logging.getLogger(__name__)


def trust_middleware(
    *,
    trust: TrustDomain,
    default_destination: str,
    destination_for_host: Callable[[str | None], str | None] | None = None,
) -> Middleware:
    """``destination_for_host(Host)`` names the hosted server a request with
    no X-Matrix ``destination`` (older servers) is for: the tenant its Host
    header routes to; ``default_destination`` when it names none."""

    def addressed(request: web.Request, destination: str | None) -> str:
        if destination:
            return destination
        if destination_for_host is not None:
            routed = destination_for_host(request.host)
            if routed is not None:
                return routed
        return default_destination

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(FEDERATION_PREFIX):
            return await handler(request)
        headers = request.headers.getall("Authorization", [])
        xm = [h for h in headers if h.strip().lower().startswith("x-matrix")]
        try:
            auth = parse_authorization_header(xm[0] if xm else None)
        except XMatrixAuthError:
            return await handler(request)  # the X-Matrix middleware answers 401
        destination = addressed(request, auth.destination)
        refused = trust.refusal(destination, auth.origin)
        if refused is not None:
            logger.info("Refused %s %s from %s: %s", request.method, request.path,
                        auth.origin, refused)
            raise MatrixError(403, Codes.FORBIDDEN, refused)
        return await handler(request)

    return middleware


def register(app: web.Application, hs: HomeServer) -> None:
    """Install on the federation listener, before :func:`homeserver.http.x_matrix.register`."""
    trust = getattr(hs, "trust", None)
    tenants = getattr(hs, "tenants", None)

    def destination_for_host(host: str | None) -> str | None:
        tenant = tenants.for_host(host) if tenants is not None else None
        return None if tenant is None else str(tenant.server_name)

    if isinstance(trust, TrustDomain):
        app.middlewares.append(
            trust_middleware(trust=trust, default_destination=hs.server_name,
                             destination_for_host=destination_for_host)
        )
