"""Middleware factories shared by every listener (cf. aiohttp web_middlewares.py).

Order, outermost first: :func:`observe_middleware` (access log, metrics; sees
the final status), :func:`cors_middleware` (client listener only; headers on
errors too), :func:`~homeserver.http.errors.error_middleware`,
:func:`body_limit_middleware`.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.http.json import json_response
from homeserver.metrics import Metrics

__all__ = [
    "CORS_HEADERS",
    "body_limit_middleware",
    "cors_middleware",
    "observe_middleware",
    "servlet_name",
]

access_logger = logging.getLogger("homeserver.access")

# Client-Server API, "Web Browser Clients": the recommended headers on all requests.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}

_TOKEN_RE = re.compile(r"(access_token=)[^&]*")


def servlet_name(request: web.Request) -> str:
    """The matched route pattern (bounded label cardinality), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _loggable_path(request: web.Request) -> str:
    qs = request.rel_url.raw_query_string
    path = request.rel_url.raw_path
    if not qs:
        return path
    return path + "?" + _TOKEN_RE.sub(r"\1<redacted>", qs)


def observe_middleware(*, listener: str, metrics: Metrics, clock: Clock) -> Middleware:
    """One access-log line and one metrics observation per request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = clock.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            elapsed = clock.monotonic() - start
            metrics.observe_request(
                listener, servlet_name(request), request.method, status, elapsed
            )
            access_logger.info(
                "%s %s %s %d %.1fms",
                request.remote,
                request.method,
                _loggable_path(request),
                status,
                elapsed * 1000,
            )

    return middleware


def cors_middleware() -> Middleware:
    """CORS headers on every response; any OPTIONS preflight answers 200 ``{}``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return json_response(200, {}, headers=CORS_HEADERS)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(CORS_HEADERS)
            raise
        response.headers.update(CORS_HEADERS)
        return response

    return middleware


def body_limit_middleware(max_size: int) -> Middleware:
    """Refuse a declared body over ``max_size`` before reading it (413 M_TOO_LARGE).

    Chunked bodies have no Content-Length; aiohttp's ``client_max_size`` stops
    those while they are read, and the JSON helper maps that to the same error.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_size:
            raise MatrixError(
                413, Codes.TOO_LARGE, f"Request body too large (limit {max_size} bytes)"
            )
        return await handler(request)

    return middleware
