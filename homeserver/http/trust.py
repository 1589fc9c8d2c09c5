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


def trust_middleware(*, trust: TrustDomain, default_destination: str) -> Middleware:
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
        destination = auth.destination or default_destination
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
    if isinstance(trust, TrustDomain):
        app.middlewares.append(
            trust_middleware(trust=trust, default_destination=hs.server_name)
        )
