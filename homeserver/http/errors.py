"""The one place errors become HTTP responses.

Client-Server API, "Standard error response": ``{"errcode", "error"}`` with
an HTTP status. A :class:`~federation.errors.MatrixError` is shown as it is;
aiohttp's own 404/405/413 become ``M_UNRECOGNIZED``/``M_TOO_LARGE``; any
other exception is a bug, logged with its traceback and answered as a bare
``500 M_UNKNOWN`` so nothing internal leaks.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from federation.errors import Codes, MatrixError
from homeserver.http.json import json_response

__all__ = ["error_middleware", "matrix_error_response"]

logger = logging.getLogger(__name__)


def matrix_error_response(err: MatrixError) -> web.Response:
    return json_response(err.code, err.to_json())


def _from_http_exception(exc: web.HTTPException) -> MatrixError:
    if exc.status == 404:
        return MatrixError(404, Codes.UNRECOGNIZED, "Unrecognized request")
    if exc.status == 405:
        return MatrixError(405, Codes.UNRECOGNIZED, "Unrecognized request method")
    if exc.status == 413:
        return MatrixError(413, Codes.TOO_LARGE, "Request body too large")
    return MatrixError(exc.status, Codes.UNKNOWN, exc.reason)


def error_middleware() -> Middleware:
    """Middleware mapping every exception a handler raises to a Matrix JSON error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except MatrixError as e:
            return matrix_error_response(e)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return matrix_error_response(_from_http_exception(e))
        except Exception:
            logger.exception("Internal error handling %s %s", request.method, request.path)
            return matrix_error_response(MatrixError(500, Codes.UNKNOWN, "Internal server error"))

    return middleware
