"""A minimal signed federation HTTP client.

Spec: server-server API "Request Authentication" (every request X-Matrix
signed over ``{method, uri, origin, destination, content}``), "Resolving
server names" (through :mod:`federation.transport.discovery` when a
``ServerDiscovery`` is given: IP literals and explicit ports, ``.well-known``
delegation, SRV, port 8448; without one, an explicit port or 8448) and
"Response Authentication" (TLS, checked per ``federation.verify_certificates``
through the ``ssl.SSLContext`` given).

The client sends JSON and reads JSON, with a timeout per request and a cap on
the response size so a hostile peer cannot make us buffer gigabytes. Each
destination has its own bound on concurrent requests, on top of the session's
keep-alive pool (keyed by host and port), so one slow peer cannot take every
connection.
Failures raise :class:`FederationClientError` (network, timeout, size,
non-JSON) or its subclass :class:`FederationHttpError` (the peer answered
with an error status).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypedDict, Unpack
from urllib.parse import urlencode

import aiohttp
from signedjson.types import SigningKey
from yarl import URL

from federation.canonical_json import parse_json_strict
from federation.errors import Codes, MatrixError
from federation.transport.discovery import ResolvedServer, ServerDiscovery
from federation.transport.wire import sign_request

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "FederationClient",
    "FederationClientError",
    "FederationHttpError",
    "RequestOptions",
    "base_url_for",
]

logger = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RESPONSE_SIZE = 50 * 1024 * 1024
#: Requests in flight to one destination at a time; more wait their turn.
DEFAULT_MAX_CONCURRENT_PER_DESTINATION = 16


class FederationClientError(Exception):
    """A request to ``destination`` failed.

    ``transient`` says whether retrying later may help (network errors,
    timeouts, 5xx, 429), so callers can decide on backoff.
    """

    def __init__(self, destination: str, reason: str, *, transient: bool = True) -> None:
        super().__init__(f"{destination}: {reason}")
        self.destination = destination
        self.reason = reason
        self.transient = transient


class FederationHttpError(FederationClientError):
    """The peer answered with a non-2xx status. ``body`` is its JSON, if any."""

    def __init__(self, destination: str, status: int, body: Any) -> None:
        errcode = body.get("errcode") if isinstance(body, dict) else None
        error = body.get("error") if isinstance(body, dict) else None
        detail = (
            f"HTTP {status}" + (f" {errcode}" if errcode else "") + (f": {error}" if error else "")
        )
        super().__init__(destination, detail, transient=status >= 500 or status == 429)
        self.status = status
        self.body = body
        self.errcode: str | None = errcode if isinstance(errcode, str) else None


def base_url_for(destination: str) -> str:
    """``https://host:port`` for a server name (spec "Resolving server names",
    steps for an IP literal or an explicit port, else port 8448)."""
    if destination.startswith("["):
        host, _, rest = destination[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(DEFAULT_FEDERATION_PORT)
        return f"https://[{host}]:{port}"
    host, sep, port = destination.rpartition(":")
    if sep and port.isdigit():
        return f"https://{host}:{port}"
    return f"https://{destination}:{DEFAULT_FEDERATION_PORT}"


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`FederationClient.request_json` that
    ``get_json``, ``post_json`` and ``put_json`` pass on (all optional)."""

    query: Mapping[str, Any] | None
    origin: str | None
    timeout_s: float | None


class FederationClient:
    """Signed JSON requests to other homeservers.

    ``signing_keys`` maps each server name we send as (a node hosts several)
    to the key that signs its requests; ``origin`` defaults to
    ``default_origin``. ``destination_overrides`` maps a server name to a
    base URL (``http://127.0.0.1:1234``): for tests on loopback, where names
    cannot carry the port chosen by the OS, and for pinning a peer's address.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        signing_keys: Mapping[str, SigningKey],
        default_origin: str,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        destination_overrides: Mapping[str, str] | None = None,
        discovery: ServerDiscovery | None = None,
        max_concurrent_per_destination: int = DEFAULT_MAX_CONCURRENT_PER_DESTINATION,
    ) -> None:
        if default_origin not in signing_keys:
            raise ValueError(f"no signing key for default origin {default_origin}")
        self._session = session
        self._signing_keys = dict(signing_keys)
        self.default_origin = default_origin
        self._ssl = ssl_context
        self._timeout_s = timeout_s
        self._max_response_size = max_response_size
        self.destination_overrides: MutableMapping[str, str] = dict(destination_overrides or {})
        #: Server discovery; ``None``: explicit port or 8448 only (no lookups).
        self.discovery = discovery
        self._max_per_destination = max_concurrent_per_destination
        self._slots: dict[str, asyncio.Semaphore] = {}
        #: ``guard(origin, destination, path)`` runs before every request and
        #: raises (a :class:`FederationClientError`) to refuse it: the node's
        #: trust domain (docs/usage/trust_domain.md). Nothing is sent then.
        self.destination_guard: Callable[[str, str, str], None] | None = None

    def set_signing_key(self, origin: str, key: SigningKey) -> None:
        """Sign requests from ``origin`` with ``key`` from now on (rotation, new tenant)."""
        self._signing_keys[origin] = key

    def hosts(self, origin: str) -> bool:
        """Whether we can sign requests as ``origin``."""
        return origin in self._signing_keys

    async def _targets(self, destination: str) -> list[tuple[str, str | None, str]]:
        """``(base URL, certificate name or None, Host header)`` to try in order."""
        override = self.destination_overrides.get(destination)
        if override:
            return [(override, None, destination)]
        if self.discovery is None:
            return [(base_url_for(destination), None, destination)]
        try:
            servers: list[ResolvedServer] = await self.discovery.resolve(destination)
        except ValueError as e:
            raise FederationClientError(destination, str(e), transient=False) from None
        return [
            (s.base_url, s.tls_name if s.tls_name != s.host else None, s.host_header)
            for s in servers
        ]

    def _slot(self, destination: str) -> asyncio.Semaphore:
        slot = self._slots.get(destination)
        if slot is None:
            slot = self._slots[destination] = asyncio.Semaphore(self._max_per_destination)
        return slot

    async def get_json(
        self, destination: str, path: str, **options: Unpack[RequestOptions]
    ) -> Any:
        """``GET``: :meth:`request_json` without a body."""
        return await self.request_json("GET", destination, path, **options)

    async def post_json(
        self, destination: str, path: str, body: Any, **options: Unpack[RequestOptions]
    ) -> Any:
        """``POST`` ``body``: :meth:`request_json`."""
        return await self.request_json("POST", destination, path, body=body, **options)

    async def put_json(
        self, destination: str, path: str, body: Any, **options: Unpack[RequestOptions]
    ) -> Any:
        """``PUT`` ``body``: :meth:`request_json`."""
        return await self.request_json("PUT", destination, path, body=body, **options)

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        origin: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Send one signed request and return the parsed JSON response.

        ``path`` must already be percent-encoded (callers quote IDs); it is
        sent exactly as signed. ``query`` values may be lists (repeated
        parameters, e.g. ``ver``).
        """
        origin = origin or self.default_origin
        if self.destination_guard is not None:
            self.destination_guard(origin, destination, path)
        key = self._signing_keys.get(origin)
        if key is None:
            raise ValueError(f"we do not host {origin}: no signing key")
        uri = path
        if query:
            uri += "?" + urlencode(query, doseq=True)
        auth = sign_request(
            origin=origin,
            destination=destination,
            method=method,
            uri=uri,
            signing_key=key,
            content=body,
        )
        headers = {"Authorization": auth}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout_s)
        async with self._slot(destination):
            targets = await self._targets(destination)
            for n, (base, tls_name, host_header) in enumerate(targets):
                url = URL(base + uri, encoded=True)
                headers["Host"] = host_header
                try:
                    async with self._session.request(
                        method,
                        url,
                        data=data,
                        headers=headers,
                        timeout=timeout,
                        ssl=self._ssl if self._ssl is not None else True,
                        server_hostname=tls_name,
                        allow_redirects=False,
                    ) as resp:
                        raw = await self._read_limited(destination, resp)
                        status = resp.status
                    break
                except FederationClientError:
                    raise
                except TimeoutError:
                    raise FederationClientError(
                        destination, f"{method} {path} timed out"
                    ) from None
                except (aiohttp.ClientConnectionError, OSError) as e:
                    # Spec "Resolving server names": SRV may give several
                    # targets; an unreachable one moves on to the next.
                    if n + 1 < len(targets) and not isinstance(
                        e, aiohttp.ServerDisconnectedError
                    ):
                        logger.info("%s unreachable at %s (%s); trying the next target",
                                    destination, base, e)
                        continue
                    raise FederationClientError(
                        destination, f"{method} {path} failed: {type(e).__name__}: {e}"
                    ) from None
                except (aiohttp.ClientError, asyncio.IncompleteReadError) as e:
                    raise FederationClientError(
                        destination, f"{method} {path} failed: {type(e).__name__}: {e}"
                    ) from None
        parsed: Any
        if not 200 <= status < 300:
            # An error body is read for its errcode and message only, so
            # plain JSON (or none) will do.
            try:
                parsed = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError):
                parsed = None
            raise FederationHttpError(destination, status, parsed)
        # Spec appendices "Canonical JSON": a success body feeds signature
        # checks and stored events, so it is read as strictly as inbound
        # requests are: duplicate keys, floats, out-of-range integers and deep
        # nesting would let two servers see different content. The same
        # answer would come back on a retry, hence not transient.
        try:
            return parse_json_strict(raw) if raw else None
        except MatrixError as e:
            what = "not JSON" if e.errcode == Codes.NOT_JSON.value else "not valid Matrix JSON"
            raise FederationClientError(
                destination, f"{method} {path}: response is {what}: {e.msg}", transient=False
            ) from None

    async def _read_limited(self, destination: str, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_size
        if resp.content_length is not None and resp.content_length > limit:
            raise FederationClientError(
                destination,
                f"response of {resp.content_length} bytes exceeds the {limit}-byte limit",
                transient=False,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise FederationClientError(
                    destination, f"response exceeds the {limit}-byte limit", transient=False
                )
            chunks.append(chunk)
        return b"".join(chunks)
