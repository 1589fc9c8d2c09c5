"""``homeserver federation-test SERVER_NAME``: is a homeserver's federation healthy?

The checks of matrix-federation-tester, against any homeserver (Concord,
Synapse, ...), each reported as one line (or ``--json``):

``discovery``
    Where the name resolves (Server-Server API "Resolving server names":
    IP literal or explicit port, ``.well-known`` delegation, SRV, 8448),
    through :class:`federation.transport.discovery.ServerDiscovery`.
``tls``
    A TLS handshake with the resolved address, the certificate checked
    against the expected name unless ``--no-verify-tls`` (``--ca-file`` adds
    a trusted CA).
``version``
    ``GET /_matrix/federation/v1/version``, unauthenticated as the spec
    allows. A server that answers only signed requests gets a warning.
``keys.*``
    ``GET /_matrix/key/v2/server``: ``server_name`` is the name asked for,
    every ``verify_keys`` key signed the response, ``valid_until_ts`` is in
    the future.
``signed_request``
    A request X-Matrix-signed by a throwaway origin ``127.0.0.1:PORT`` whose
    key this command serves over TLS for the duration of the run, to an
    endpoint that requires authentication (``GET /_matrix/federation/v1/query
    /profile`` of a made-up user of the target: 200 or 404 mean the request
    was accepted, 401 or 403 that it was refused); passes only if the request
    was accepted and the target fetched that key at least once. The target must
    be able to reach this machine's loopback, so the check runs only for a
    target on loopback and is skipped (with a note) otherwise. The origin's
    certificate is self-signed: a target that verifies certificates rejects it.

Exit status 0 when no check failed (warnings and skips do not fail), 1
otherwise. Library use: :func:`run_checks` (re-exported by
``concord_harness.tester``).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import secrets
import socket
import ssl
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from signedjson.key import generate_signing_key

from federation.clock import Clock, RealClock
from federation.server_keys import (
    KeyLookupError,
    build_server_key_response,
    parse_server_key_response,
)
from federation.transport.client import FederationClient, FederationClientError, FederationHttpError
from federation.transport.discovery import ResolvedServer, ServerDiscovery, split_server_name
from homeserver.cli.generate_config import write_self_signed_certificate
from homeserver.config import valid_server_name

__all__ = ["Check", "Report", "add_parser", "federation_test", "run_checks"]

Status = Literal["pass", "fail", "warn", "skip"]
TIMEOUT_S = 15.0


@dataclass
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class Report:
    server_name: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }

    def human(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{c.status.upper():4}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        verdict = "all checks passed" if self.ok else "some checks FAILED"
        return "\n".join([f"Federation test of {self.server_name}:", *lines, verdict])


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "federation-test",
        help="Check a homeserver's federation (discovery, TLS, version, keys, signing).",
        description="Check SERVER_NAME's federation like matrix-federation-tester: "
        "discovery, TLS, /_matrix/federation/v1/version, /_matrix/key/v2/server and a "
        "signed request round trip. One pass/fail line per check, or --json. Exits 0 "
        "when no check failed, 1 otherwise.",
    )
    p.add_argument("server_name", metavar="SERVER_NAME", help="the server name to test")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--no-verify-tls",
        action="store_true",
        help="do not check the target's certificate (test setups with self-signed ones)",
    )
    p.add_argument("--ca-file", metavar="F", help="PEM bundle of extra CAs to trust")
    p.set_defaults(func=federation_test)


def federation_test(args: argparse.Namespace) -> int:
    if not valid_server_name(args.server_name):
        print(f"federation-test: {args.server_name!r} is not a server name", file=sys.stderr)
        return 1
    try:
        ssl_ctx = _ssl_context(verify=not args.no_verify_tls, ca_file=args.ca_file)
    except (OSError, ssl.SSLError) as e:
        print(f"federation-test: --ca-file: {e}", file=sys.stderr)
        return 1
    report = asyncio.run(run_checks(args.server_name, ssl_context=ssl_ctx))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.human())
    return 0 if report.ok else 1


def _ssl_context(*, verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_checks(
    server_name: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock | None = None,
    discovery: ServerDiscovery | None = None,
) -> Report:
    """Run every check against ``server_name``; never raises for a bad target."""
    clock = clock or RealClock()
    ssl_context = ssl_context or _ssl_context(verify=True)
    checks: list[Check] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context), timeout=timeout
    ) as session:
        discovery = discovery or ServerDiscovery(session, clock, ssl_context=ssl_context)
        target = await _check_discovery(server_name, discovery, checks)
        if target is None:
            return Report(server_name, checks)
        if not await _check_tls(target, ssl_context, checks):
            return Report(server_name, checks)
        base = target.base_url
        headers = {"Host": target.host_header}
        version_status = await _check_version(session, base, headers, checks)
        await _check_keys(session, base, headers, server_name, clock, checks)
        await _check_signed_request(
            session, server_name, target, ssl_context, clock, checks, version_status
        )
    return Report(server_name, checks)


async def _check_discovery(
    server_name: str, discovery: ServerDiscovery, checks: list[Check]
) -> ResolvedServer | None:
    try:
        servers = await discovery.resolve(server_name)
    except Exception as e:  # DNS, .well-known and bad names all end here
        checks.append(Check("discovery", "fail", f"cannot resolve {server_name}: {e}"))
        return None
    if not servers:
        checks.append(Check("discovery", "fail", f"{server_name} resolves to nothing"))
        return None
    host, port = split_server_name(server_name)
    s = servers[0]
    if port is not None or _is_ip(host):
        how = "IP literal or explicit port"
    elif s.host_header != server_name:
        how = f"delegated by .well-known to {s.host_header}"
    elif (s.host, s.port) != (host, 8448):
        how = "SRV record"
    else:
        how = "default port 8448 (no .well-known, no SRV)"
    others = f" (+{len(servers) - 1} more)" if len(servers) > 1 else ""
    checks.append(Check("discovery", "pass", f"{s.host}:{s.port}{others}: {how}"))
    return s


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


async def _check_tls(target: ResolvedServer, ctx: ssl.SSLContext, checks: list[Check]) -> bool:
    server_hostname = None if _is_ip(target.tls_name) else target.tls_name
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host,
                target.port,
                ssl=ctx,
                server_hostname=server_hostname if server_hostname else target.host,
            ),
            TIMEOUT_S,
        )
    except (OSError, ssl.SSLError, TimeoutError) as e:
        checks.append(Check("tls", "fail", f"{target.host}:{target.port}: {e}"))
        return False
    tls = writer.get_extra_info("ssl_object")
    version = tls.version() if tls is not None else "?"
    writer.close()
    verified = ctx.verify_mode != ssl.CERT_NONE
    note = f"certificate valid for {target.tls_name}" if verified else "certificate NOT checked"
    checks.append(Check("tls", "pass", f"{version}, {note}"))
    return True


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, None


async def _check_version(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], checks: list[Check]
) -> int | None:
    try:
        status, body = await _get(session, base + "/_matrix/federation/v1/version", headers)
    except (aiohttp.ClientError, TimeoutError) as e:
        checks.append(Check("version", "fail", f"request failed: {e}"))
        return None
    server = body.get("server") if isinstance(body, dict) else None
    if status == 200 and isinstance(server, dict):
        checks.append(
            Check("version", "pass", f"{server.get('name', '?')} {server.get('version', '?')}")
        )
    elif status == 401:
        checks.append(
            Check(
                "version",
                "warn",
                "answers only signed requests (HTTP 401); the spec requires no "
                "authentication here (see signed_request for a signed attempt)",
            )
        )
    else:
        checks.append(Check("version", "fail", f"HTTP {status}: {str(body)[:200]}"))
    return status


async def _check_keys(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    server_name: str,
    clock: Clock,
    checks: list[Check],
) -> None:
    try:
        status, body = await _get(session, base + "/_matrix/key/v2/server", headers)
    except (aiohttp.ClientError, TimeoutError) as e:
        checks.append(Check("keys", "fail", f"GET /_matrix/key/v2/server failed: {e}"))
        return
    if status != 200 or not isinstance(body, dict):
        checks.append(Check("keys", "fail", f"GET /_matrix/key/v2/server: HTTP {status}"))
        return
    claimed = body.get("server_name")
    if claimed == server_name:
        checks.append(Check("keys.server_name", "pass", f"{claimed}"))
    else:
        checks.append(
            Check("keys.server_name", "fail", f"response is for {claimed!r}, not {server_name!r}")
        )
    try:
        parsed = parse_server_key_response(body, claimed if isinstance(claimed, str) else "")
        ids = ", ".join(sorted(parsed.verify_keys))
        checks.append(Check("keys.self_signature", "pass", f"signed by {ids}"))
    except KeyLookupError as e:
        checks.append(Check("keys.self_signature", "fail", str(e)))
    valid_until = body.get("valid_until_ts")
    now = clock.time_ms()
    if type(valid_until) is not int:
        checks.append(Check("keys.valid_until_ts", "fail", "missing or not an integer"))
    elif valid_until <= now:
        checks.append(
            Check(
                "keys.valid_until_ts",
                "fail",
                f"expired {(now - valid_until) / 3_600_000:.1f} h ago ({valid_until})",
            )
        )
    else:
        checks.append(
            Check(
                "keys.valid_until_ts",
                "pass",
                f"valid for {(valid_until - now) / 3_600_000:.1f} h more",
            )
        )


class _KeyServer:
    """Serves a throwaway origin's key over TLS on loopback for one run."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.key = generate_signing_key("t" + secrets.token_hex(3))
        self._runner: web.AppRunner | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="concord-fedtest-")
        self.origin = ""
        #: How often the target (or a notary for it) fetched our key.
        self.fetches = 0

    async def _keys(self, request: web.Request) -> web.Response:
        self.fetches += 1
        body = build_server_key_response(
            self.origin, [self.key], [], now_ms=self._clock.time_ms(), validity_ms=3_600_000
        )
        return web.json_response(body)

    async def start(self) -> None:
        d = Path(self._tmp.name)
        write_self_signed_certificate("127.0.0.1", str(d / "tls.crt"), str(d / "tls.key"))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(d / "tls.crt"), str(d / "tls.key"))
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.origin = f"127.0.0.1:{port}"
        site = web.SockSite(self._runner, sock, ssl_context=ctx)
        await site.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._tmp.cleanup()


async def _check_signed_request(
    session: aiohttp.ClientSession,
    server_name: str,
    target: ResolvedServer,
    ssl_context: ssl.SSLContext,
    clock: Clock,
    checks: list[Check],
    version_status: int | None,
) -> None:
    if not _is_loopback(target.host):
        checks.append(
            Check(
                "signed_request",
                "skip",
                f"{target.host} is not on this machine's loopback, so it cannot fetch "
                "the throwaway origin's key from here",
            )
        )
        return
    keys = _KeyServer(clock)
    await keys.start()
    try:
        client = FederationClient(
            session,
            signing_keys={keys.origin: keys.key},
            default_origin=keys.origin,
            ssl_context=ssl_context,
            destination_overrides={server_name: target.base_url},
            timeout_s=TIMEOUT_S,
        )
        user_id = f"@federation-test-{secrets.token_hex(4)}:{server_name}"
        try:
            # An endpoint that needs authentication: /version would answer
            # whatever the signature.
            await client.get_json(server_name, "/_matrix/federation/v1/query/profile",
                                  query={"user_id": user_id})
            status = 200
        except FederationHttpError as e:
            status = e.status
            if status not in (404,):
                refused = status in (401, 403)
                checks.append(
                    Check(
                        "signed_request",
                        "fail",
                        f"signed as {keys.origin}: "
                        + (f"refused with {status} {e.errcode or ''}".rstrip()
                           + " (the target could not fetch or accept our key; a target that "
                           "verifies certificates refuses our self-signed one)"
                           if refused else e.reason),
                    )
                )
                return
        except FederationClientError as e:
            checks.append(Check("signed_request", "fail", f"signed as {keys.origin}: {e.reason}"))
            return
        if keys.fetches == 0:
            checks.append(Check(
                "signed_request", "fail",
                f"signed as {keys.origin}: answered {status} without ever fetching our key, "
                "so the signature cannot have been checked",
            ))
            return
        checks.append(Check(
            "signed_request", "pass",
            f"signed as {keys.origin}: the target fetched our key ({keys.fetches}x) and "
            f"accepted the signed query/profile ({status})",
        ))
    finally:
        await keys.close()
