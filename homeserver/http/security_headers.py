"""Security headers on every Client-Server API response.

The client API is read by browsers (Element Web and friends), so its answers
must never be sniffed into something executable, framed, or leak the URL
they were fetched from (OWASP "HTTP Security Response Headers"; Synapse sets
the same on its JSON and media resources):

* ``X-Content-Type-Options: nosniff``: a JSON body stays JSON;
* ``X-Frame-Options: DENY`` (and CSP ``frame-ancestors 'none'``): no framing;
* ``Content-Security-Policy`` on JSON: nothing in the response may load or
  run anything (``default-src 'none'``, ``sandbox``) should a browser ever
  render it;
* ``Referrer-Policy: no-referrer``: URLs carrying room IDs or tokens do not
  travel on.

Handlers that need other values (a future HTML page) set their own: the
middleware only fills in headers that are absent. It sits outside the error
and CORS middlewares, so errors and preflight answers carry them too.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

__all__ = ["JSON_CSP", "SECURITY_HEADERS", "security_headers_middleware"]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

JSON_CSP = (
    "default-src 'none'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'; sandbox"
)


def _add(target: web.StreamResponse | web.HTTPException) -> None:
    h = target.headers
    for name, value in SECURITY_HEADERS.items():
        h.setdefault(name, value)
    content_type = h.get("Content-Type", "application/json")
    if content_type.split(";")[0].strip().lower() == "application/json":
        h.setdefault("Content-Security-Policy", JSON_CSP)


def security_headers_middleware() -> Middleware:
    """Add :data:`SECURITY_HEADERS` (and :data:`JSON_CSP` on JSON) to every response."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _add(e)
            raise
        if not response.prepared:  # a streamed body has sent its headers already
            _add(response)
        return response

    return middleware
