"""X-Matrix request authentication for the federation listener.

Spec: server-server API "Request Authentication". Every request under
``/_matrix/federation/`` must carry ``Authorization: X-Matrix ...`` signed by
the origin with a key that is current now (``old_verify_keys`` sign events,
never requests); a ``destination`` parameter, when present, must be a name
this node hosts. The key endpoints (``/_matrix/key/``) stay open, as the spec
allows, since a server must be able to fetch keys before it can check any.
So does ``GET /_matrix/federation/v1/version``, which ``version.yaml`` lists
without a security requirement: a request without an ``Authorization``
header is answered; one that carries a header is still checked (as Synapse
does), so a bad signature never passes unnoticed.

Failures are 401 ``M_UNAUTHORIZED`` with a message naming the check that
failed (missing header, unparsable header, destination not hosted here,
unknown key, bad signature). On success the handler finds the authenticated
origin with :func:`authenticated_origin` (and the destination it was meant
for with :func:`request_destination`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from federation.canonical_json import parse_json_strict
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.keyring import Keyring
from federation.transport.wire import (
    XMatrixAuthError,
    XMatrixFailure,
    parse_authorization_header,
    verify_request,
)

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = [
    "FEDERATION_PREFIX",
    "UNAUTHENTICATED_PATHS",
    "authenticated_origin",
    "is_authenticated",
    "register",
    "request_destination",
    "x_matrix_middleware",
]

logger = logging.getLogger(__name__)

FEDERATION_PREFIX = "/_matrix/federation/"

#: Paths under the prefix that the spec lists without a security requirement.
UNAUTHENTICATED_PATHS = frozenset({"/_matrix/federation/v1/version"})

_ORIGIN = "concord.x_matrix.origin"
_DESTINATION = "concord.x_matrix.destination"


def authenticated_origin(request: web.Request) -> str:
    """The server name that signed this request (set by the middleware)."""
    origin = request.get(_ORIGIN)
    if not isinstance(origin, str):
        # A federation servlet mounted outside the middleware's prefix: a bug.
        raise RuntimeError(f"{request.path} was not X-Matrix authenticated")
    return origin


def is_authenticated(request: web.Request) -> bool:
    """Whether the middleware authenticated this request (the paths of
    :data:`UNAUTHENTICATED_PATHS` may be answered without)."""
    return isinstance(request.get(_ORIGIN), str)


def request_destination(request: web.Request) -> str:
    """The hosted server name this request was addressed to."""
    dest = request.get(_DESTINATION)
    if not isinstance(dest, str):
        raise RuntimeError(f"{request.path} was not X-Matrix authenticated")
    return dest


async def _json_content(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        request.protocol.force_close()
        raise MatrixError(413, Codes.TOO_LARGE, "Request body too large") from None
    if not raw.strip():
        return None
    # The strict parser: what the servlet would refuse anyway is refused here
    # (400 M_NOT_JSON / M_BAD_JSON), and a depth bomb never reaches a
    # recursive walk (the signature check re-encodes the content).
    return parse_json_strict(raw)


def x_matrix_middleware(
    *,
    keyring: Keyring,
    hosts: Callable[[str], bool],
    default_destination: str,
    clock: Clock,
    prefix: str = FEDERATION_PREFIX,
    ready: Callable[[], Any] | None = None,
) -> Middleware:
    """Authenticate every request whose path starts with ``prefix``.

    ``hosts(name)`` says whether a ``destination`` is ours;
    ``default_destination`` is what the origin signed when it sent no
    ``destination`` (older servers). ``ready`` is awaited first (key set-up).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        headers = request.headers.getall("Authorization", [])
        if not headers and request.path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        if ready is not None:
            await ready()
        xm = [h for h in headers if h.strip().lower().startswith("x-matrix")]
        auth = parse_authorization_header(xm[0] if xm else (headers[0] if headers else None))
        destination = auth.destination or default_destination
        if not hosts(destination):
            raise XMatrixAuthError(
                XMatrixFailure.DESTINATION_MISMATCH,
                f"destination {destination!r} is not a server name hosted here",
            )
        content = await _json_content(request)
        keys = await keyring.get_verify_keys(
            auth.origin, [auth.key], clock.time_ms(), allow_old=False
        )
        fk = keys.get(auth.key)
        try:
            verify_request(
                auth,
                request.method,
                request.raw_path,
                destination,
                content,
                None if fk is None else fk.verify_key,
            )
        except XMatrixAuthError as e:
            logger.info(
                "X-Matrix from %s to %s for %s %s refused: %s",
                auth.origin,
                destination,
                request.method,
                request.path,
                e.detail,
            )
            raise
        request[_ORIGIN] = auth.origin
        request[_DESTINATION] = destination
        return await handler(request)

    return middleware


def register(app: web.Application, hs: HomeServer) -> None:
    """Install the middleware on the federation listener's app."""
    from homeserver.keys import key_service_for

    keys = key_service_for(hs)
    # The tenant registry knows every hosted name, including tenants created
    # at run time; a node built without one (tests) falls back to the keys.
    tenants = getattr(hs, "tenants", None)
    app.middlewares.append(
        x_matrix_middleware(
            keyring=keys.keyring,
            hosts=keys.hosts if tenants is None else tenants.hosts,
            default_destination=hs.server_name,
            clock=hs.clock,
            ready=keys.start,
        )
    )
