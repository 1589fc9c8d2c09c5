"""Server discovery: from a server name to where and how to connect.

Spec: ``server-server-api.md`` "Resolving server names" (steps 1-6, with
3.1-3.5 for a delegated name). In short:

1. an IP literal: that address, the given port or 8448;
2. a hostname with an explicit port: that host and port;
3. otherwise ``GET https://<hostname>/.well-known/matrix/server``; a valid
   ``m.server`` delegates to ``<delegated_hostname>[:<port>]``, which is then
   resolved like steps 1, 2, 4, 5 and 6 but without another ``.well-known``;
4. SRV ``_matrix-fed._tcp.<hostname>``;
5. (deprecated) SRV ``_matrix._tcp.<hostname>``;
6. ``<hostname>:8448``.

The ``Host`` header and the name the certificate must match (``tls_name``)
follow the step taken. ``.well-known`` answers are cached per their
``Cache-Control``/``Expires`` (24 h by default, at most 48 h) and failures for
up to an hour, backing off on repeated failures; SRV answers by their DNS
TTL. All expiry reads the injected :class:`~federation.clock.Clock`.

DNS is behind the small :class:`SrvResolver` Protocol: production uses
:class:`AiodnsSrvResolver`, tests implement their own. The ``.well-known``
request goes through the aiohttp session given, whose TLS settings
(``federation.verify_certificates``/``ca_file``) apply to it too.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from federation.clock import Clock

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "AiodnsSrvResolver",
    "ResolvedServer",
    "ServerDiscovery",
    "SrvLookupError",
    "SrvRecord",
    "SrvResolver",
    "order_srv_records",
    "parse_cache_lifetime_s",
    "split_server_name",
]

logger = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448

#: Spec: "The recommended sensible default is 24 hours" and "a maximum cache
#: time for responses: 48 hours is recommended".
WELL_KNOWN_DEFAULT_TTL_S = 24 * 3600
WELL_KNOWN_MAX_TTL_S = 48 * 3600
#: Errors "are recommended to be cached for up to an hour", backing off
#: exponentially: 5 minutes for the first failure, doubling, capped at 1 h.
WELL_KNOWN_ERROR_TTL_MIN_S = 5 * 60
WELL_KNOWN_ERROR_TTL_MAX_S = 3600
WELL_KNOWN_TIMEOUT_S = 10.0
WELL_KNOWN_MAX_SIZE = 50 * 1024
WELL_KNOWN_MAX_REDIRECTS = 5
#: An SRV answer is kept for its TTL, within these bounds (a TTL of 0 would
#: mean a DNS query per request; a huge one would pin a moved server).
SRV_MIN_TTL_S = 60
SRV_MAX_TTL_S = 24 * 3600
#: "No SRV record" is remembered this long.
SRV_NEGATIVE_TTL_S = 3600
#: A DNS failure (timeout, SERVFAIL) is remembered only briefly.
SRV_ERROR_TTL_S = 60


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    """Where to connect for a server name, and how to present the request.

    ``host``/``port`` is the TCP target (a hostname the connector resolves
    with A/AAAA, or an IP literal without brackets); ``host_header`` is the
    HTTP ``Host``; ``tls_name`` is the name the certificate must be valid for
    (and the SNI, unless an IP literal).
    """

    host: str
    port: int
    host_header: str
    tls_name: str

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SrvRecord:
    target: str
    port: int
    priority: int = 0
    weight: int = 0
    ttl: int = 3600


class SrvLookupError(Exception):
    """The DNS lookup itself failed (timeout, SERVFAIL): not the same as "no record"."""


class SrvResolver(Protocol):
    async def resolve_srv(self, name: str) -> list[SrvRecord]:
        """The SRV records of ``name``; ``[]`` if it has none (NXDOMAIN,
        NODATA). Raises :class:`SrvLookupError` if DNS failed."""


class AiodnsSrvResolver:
    """:class:`SrvResolver` over ``aiodns`` (c-ares): non-blocking SRV queries."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._resolver: Any = None

    async def resolve_srv(self, name: str) -> list[SrvRecord]:
        import aiodns
        import pycares

        if self._resolver is None:
            self._resolver = aiodns.DNSResolver(timeout=self._timeout_s)
        try:
            result = await self._resolver.query_dns(name, "SRV")
        except aiodns.error.DNSError as e:
            code = e.args[0] if e.args else None
            if code in (pycares.errno.ARES_ENOTFOUND, pycares.errno.ARES_ENODATA):
                return []
            raise SrvLookupError(f"SRV {name}: {e}") from None
        out: list[SrvRecord] = []
        for rec in result.answer:
            data = rec.data
            if isinstance(data, pycares.SRVRecordData):
                out.append(
                    SrvRecord(data.target.rstrip("."), data.port, data.priority, data.weight,
                              rec.ttl)
                )
        return out

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def split_server_name(name: str) -> tuple[str, int | None]:
    """``(hostname, port)`` of a server name (appendices "Server Name");
    an IPv6 literal is returned without brackets. Raises ``ValueError``."""
    if name.startswith("["):
        host, sep, rest = name[1:].partition("]")
        if not sep:
            raise ValueError(f"bad server name {name!r}")
        if not rest:
            return host, None
        if not rest.startswith(":") or not rest[1:].isdigit():
            raise ValueError(f"bad server name {name!r}")
        return host, int(rest[1:])
    host, sep, port = name.rpartition(":")
    if not sep:
        return name, None
    if not port.isdigit() or not host or ":" in host:
        raise ValueError(f"bad server name {name!r}")
    return host, int(port)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv_records(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within one priority, a weighted
    random order (records of weight 0 come last of their priority).

    A single record whose target is ``.`` means "the service is decidedly not
    available" (RFC 2782): no records.
    """
    if len(records) == 1 and records[0].target in ("", "."):
        return []
    out: list[SrvRecord] = []
    for prio in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == prio]
        rng.shuffle(group)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                out.extend(group)
                break
            pick = rng.randint(1, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def parse_cache_lifetime_s(headers: Any, now_ms: int) -> float | None:
    """The freshness lifetime of a response from ``Cache-Control`` (``max-age``,
    ``no-store``/``no-cache`` as 0) or else ``Expires``; ``None`` if neither."""
    cc = headers.get("Cache-Control")
    if cc:
        for part in str(cc).split(","):
            key, _, value = part.strip().partition("=")
            key = key.strip().lower()
            if key in ("no-store", "no-cache"):
                return 0.0
            if key == "max-age":
                try:
                    return max(0.0, float(int(value.strip().strip('"'))))
                except ValueError:
                    continue
    expires = headers.get("Expires")
    if expires:
        try:
            when = email.utils.parsedate_to_datetime(str(expires))
        except (TypeError, ValueError):
            return 0.0  # RFC 9111 §5.3: an invalid Expires means "already expired"
        return max(0.0, when.timestamp() - now_ms / 1000)
    return None


@dataclass
class _WellKnown:
    delegated: str | None  # None: the lookup failed
    expires_ms: int
    failures: int = 0


@dataclass
class _Resolved:
    servers: list[ResolvedServer]
    expires_ms: int


def default_well_known_url(hostname: str) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"https://{host}/.well-known/matrix/server"


class ServerDiscovery:
    """Resolves server names (spec "Resolving server names"), with caches.

    ``well_known_url`` builds the ``.well-known`` URL for a hostname (tests
    point it at a loopback server); ``srv_resolver`` does the DNS.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        srv_resolver: SrvResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        well_known_url: Callable[[str], str] = default_well_known_url,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._srv = srv_resolver if srv_resolver is not None else AiodnsSrvResolver()
        self._ssl = ssl_context
        self._well_known_url = well_known_url
        self._rng = rng or random.Random()
        self._well_known: dict[str, _WellKnown] = {}
        self._resolved: dict[str, _Resolved] = {}
        self._srv_cache: dict[str, tuple[list[SrvRecord], int]] = {}
        self._inflight: dict[str, asyncio.Future[list[ResolvedServer]]] = {}

    async def resolve(self, server_name: str) -> list[ResolvedServer]:
        """Where to connect for ``server_name``, best first (several only
        when SRV gives several targets; try the next on connection failure).

        Raises ``ValueError`` for a malformed server name.
        """
        now = self._clock.time_ms()
        cached = self._resolved.get(server_name)
        if cached is not None and now < cached.expires_ms:
            return cached.servers
        # Concurrent lookups of one name share one resolution.
        fut = self._inflight.get(server_name)
        if fut is None:
            fut = asyncio.ensure_future(self._resolve(server_name))
            self._inflight[server_name] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(server_name, None))
        return await asyncio.shield(fut)

    def forget(self, server_name: str) -> None:
        """Drop what is cached about ``server_name`` (e.g. after it moved)."""
        self._resolved.pop(server_name, None)
        host, _ = split_server_name(server_name)
        self._well_known.pop(host, None)

    async def _resolve(self, server_name: str) -> list[ResolvedServer]:
        hostname, port = split_server_name(server_name)
        # Steps 1 and 2: nothing to look up.
        if _is_ip_literal(hostname) or port is not None:
            servers = [ResolvedServer(hostname, port or DEFAULT_FEDERATION_PORT,
                                      server_name, hostname)]
            self._resolved[server_name] = _Resolved(servers, 2**62)
            return servers
        expiry: list[int] = []
        delegated = await self._get_well_known(hostname, expiry)
        if delegated is not None:
            d_host, d_port = split_server_name(delegated)
            if _is_ip_literal(d_host) or d_port is not None:
                # Steps 3.1 and 3.2.
                servers = [ResolvedServer(d_host, d_port or DEFAULT_FEDERATION_PORT,
                                          delegated, d_host)]
            else:
                # Steps 3.3-3.5: SRV for the delegated name, Host and
                # certificate for the delegated name.
                servers = await self._via_srv(d_host, expiry)
        else:
            servers = await self._via_srv(hostname, expiry)  # steps 4-6
        self._resolved[server_name] = _Resolved(servers, min(expiry))
        logger.debug("Resolved %s to %s", server_name, servers)
        return servers

    async def _via_srv(self, hostname: str, expiry: list[int]) -> list[ResolvedServer]:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            records = await self._lookup_srv(f"{service}.{hostname}", expiry)
            if records:
                return [
                    ResolvedServer(r.target, r.port, hostname, hostname)
                    for r in order_srv_records(records, self._rng)
                ]
        return [ResolvedServer(hostname, DEFAULT_FEDERATION_PORT, hostname, hostname)]

    async def _lookup_srv(self, name: str, expiry: list[int]) -> list[SrvRecord]:
        now = self._clock.time_ms()
        cached = self._srv_cache.get(name)
        if cached is not None and now < cached[1]:
            expiry.append(cached[1])
            return cached[0]
        try:
            records = await self._srv.resolve_srv(name)
        except SrvLookupError as e:
            logger.warning("SRV lookup failed: %s", e)
            records, ttl = [], SRV_ERROR_TTL_S
        else:
            if records:
                ttl = min(max(min(r.ttl for r in records), SRV_MIN_TTL_S), SRV_MAX_TTL_S)
            else:
                ttl = SRV_NEGATIVE_TTL_S
        until = now + ttl * 1000
        self._srv_cache[name] = (records, until)
        expiry.append(until)
        return records

    async def _get_well_known(self, hostname: str, expiry: list[int]) -> str | None:
        now = self._clock.time_ms()
        cached = self._well_known.get(hostname)
        if cached is not None and now < cached.expires_ms:
            expiry.append(cached.expires_ms)
            return cached.delegated
        failures = cached.failures if cached is not None and cached.delegated is None else 0
        delegated, lifetime_s = await self._fetch_well_known(hostname)
        if delegated is None:
            lifetime_s = min(WELL_KNOWN_ERROR_TTL_MIN_S * 2**failures, WELL_KNOWN_ERROR_TTL_MAX_S)
            failures += 1
        else:
            failures = 0
            if lifetime_s is None:
                lifetime_s = WELL_KNOWN_DEFAULT_TTL_S
            lifetime_s = min(lifetime_s, WELL_KNOWN_MAX_TTL_S)
        entry = _WellKnown(delegated, now + int(lifetime_s * 1000), failures)
        self._well_known[hostname] = entry
        expiry.append(entry.expires_ms)
        return delegated

    async def _fetch_well_known(self, hostname: str) -> tuple[str | None, float | None]:
        """``(m.server, cache lifetime)``; ``(None, _)`` for any failure
        (spec: "If the response is invalid ... skip to step 4")."""
        url = self._well_known_url(hostname)
        try:
            async with self._session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT_S),
                ssl=self._ssl if self._ssl is not None else True,
                max_redirects=WELL_KNOWN_MAX_REDIRECTS,
            ) as resp:
                if resp.status != 200:
                    logger.info("No .well-known for %s: HTTP %s", hostname, resp.status)
                    return None, None
                raw = await resp.content.read(WELL_KNOWN_MAX_SIZE + 1)
                if len(raw) > WELL_KNOWN_MAX_SIZE:
                    logger.info(".well-known of %s is too large", hostname)
                    return None, None
                lifetime = parse_cache_lifetime_s(resp.headers, self._clock.time_ms())
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.info("No .well-known for %s: %s: %s", hostname, type(e).__name__, e)
            return None, None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            logger.info(".well-known of %s is not JSON", hostname)
            return None, None
        server = body.get("m.server") if isinstance(body, dict) else None
        if not isinstance(server, str):
            logger.info(".well-known of %s has no m.server string", hostname)
            return None, None
        try:
            split_server_name(server)
        except ValueError:
            logger.info(".well-known of %s names an invalid server %r", hostname, server)
            return None, None
        return server, lifetime
