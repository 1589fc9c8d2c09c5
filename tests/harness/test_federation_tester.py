"""``homeserver federation-test`` against a Concord node and against a
deliberately broken server (bad self-signature, wrong server_name, expired
keys)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key

from concord_harness import Node
from concord_harness.tester import run_checks
from federation.clock import RealClock
from federation.server_keys import build_server_key_response
from federation.transport.discovery import ServerDiscovery, SrvRecord
from homeserver.cli.federation_test import _ssl_context
from homeserver.cli.generate_config import write_self_signed_certificate


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "homeserver",
        "federation-test",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def statuses(report: Any) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


async def test_a_concord_node_passes(concord_node: Node) -> None:
    code, out, err = await cli(concord_node.server_name, "--json", "--no-verify-tls")
    report = json.loads(out)
    assert report["ok"] is True, out + err
    assert code == 0
    got = statuses(report)
    for name in ("discovery", "tls", "keys.server_name", "keys.self_signature",
                 "keys.valid_until_ts", "signed_request", "version"):
        assert got[name] == "pass", report

    code, out, _ = await cli(concord_node.server_name, "--no-verify-tls")
    assert code == 0
    assert out.splitlines()[0] == f"Federation test of {concord_node.server_name}:"
    signed = [line for line in out.splitlines() if line.startswith("PASS  signed_request")]
    assert signed and "fetched our key" in signed[0] and "query/profile (404)" in signed[0]
    assert out.rstrip().endswith("all checks passed")


async def test_an_unverifiable_certificate_fails_tls(concord_node: Node) -> None:
    code, out, _ = await cli(concord_node.server_name, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert statuses(report) == {"discovery": "pass", "tls": "fail"}
    assert "CERTIFICATE_VERIFY_FAILED" in report["checks"][1]["detail"]


async def test_a_trusted_ca_file_makes_tls_pass(concord_node: Node) -> None:
    ca = str(concord_node.directory / "tls.crt")  # self-signed: its own CA
    code, out, _ = await cli(concord_node.server_name, "--json", "--ca-file", ca)
    report = json.loads(out)
    assert statuses(report)["tls"] == "pass", report
    assert "certificate valid for 127.0.0.1" in report["checks"][1]["detail"]


BrokenKeys = Callable[[str], dict[str, Any]]


class BrokenServer:
    """A TLS server on ``127.0.0.1:PORT`` serving whatever key body a test wants."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys: BrokenKeys = lambda name: {}
        self.runner: web.AppRunner | None = None
        self.name = ""
        #: How /query/profile answers a signed request: "accept" without
        #: looking at the signature (a server that checks nothing), "reject"
        #: after fetching the origin's key (a signature it refuses).
        self.profile = "accept"
        self.key_fetches: list[int] = []

    async def start(self) -> None:
        write_self_signed_certificate("127.0.0.1", str(self.tmp / "c.pem"), str(self.tmp / "k.pem"))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.tmp / "c.pem"), str(self.tmp / "k.pem"))
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_get("/_matrix/federation/v1/version", self._version)
        app.router.add_get("/_matrix/federation/v1/query/profile", self._profile)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.name = f"127.0.0.1:{sock.getsockname()[1]}"
        await web.SockSite(self.runner, sock, ssl_context=ctx).start()

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response(self.keys(self.name))

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_UNKNOWN", "error": "broken"}, status=500)

    async def _profile(self, request: web.Request) -> web.Response:
        if self.profile == "accept":
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no user"}, status=404)
        auth = request.headers.get("Authorization", "")
        origin = auth.split('origin="', 1)[1].split('"', 1)[0]
        async with aiohttp.ClientSession() as session, session.get(
            f"https://{origin}/_matrix/key/v2/server", ssl=False
        ) as resp:
            self.key_fetches.append(resp.status)
        return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "bad signature"},
                                 status=401)


@pytest.fixture
async def broken(tmp_path: Path) -> AsyncIterator[BrokenServer]:
    server = BrokenServer(tmp_path)
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


KEY = generate_signing_key("k1")
OTHER = generate_signing_key("k1")  # same key ID, different key: a forged signature
HOUR_MS = 3_600_000


def good(name: str, **kw: Any) -> dict[str, Any]:
    now = RealClock().time_ms()
    return build_server_key_response(name, [KEY], [], now_ms=now, validity_ms=HOUR_MS, **kw)


async def checks_against(server: BrokenServer) -> dict[str, tuple[str, str]]:
    report = await run_checks(server.name, ssl_context=_ssl_context(verify=False))
    return {c.name: (c.status, c.detail) for c in report.checks}


async def test_broken_server_bad_self_signature(broken: BrokenServer) -> None:
    def forged(name: str) -> dict[str, Any]:
        body = good(name)
        body["signatures"] = good_signed_by(name, OTHER)["signatures"]
        return body

    broken.keys = forged
    got = await checks_against(broken)
    assert got["keys.server_name"][0] == "pass"
    assert got["keys.self_signature"][0] == "fail"
    assert "does not verify" in got["keys.self_signature"][1]
    assert got["version"][0] == "fail" and "HTTP 500" in got["version"][1]


def good_signed_by(name: str, key: Any) -> dict[str, Any]:
    now = RealClock().time_ms()
    return build_server_key_response(name, [key], [], now_ms=now, validity_ms=HOUR_MS)


async def test_broken_server_wrong_server_name(broken: BrokenServer) -> None:
    broken.keys = lambda name: good("impostor.example")
    got = await checks_against(broken)
    assert got["keys.server_name"][0] == "fail"
    assert "'impostor.example', not" in got["keys.server_name"][1]


async def test_broken_server_expired_keys_fail_the_cli(broken: BrokenServer) -> None:
    def expired(name: str) -> dict[str, Any]:
        then = RealClock().time_ms() - 3 * HOUR_MS
        return build_server_key_response(name, [KEY], [], now_ms=then, validity_ms=HOUR_MS)

    broken.keys = expired
    got = await checks_against(broken)
    assert got["keys.self_signature"][0] == "pass"
    assert got["keys.valid_until_ts"][0] == "fail"
    assert "expired 2.0 h ago" in got["keys.valid_until_ts"][1]

    code, out, _ = await cli(broken.name, "--no-verify-tls")
    assert code == 1
    assert "FAIL  keys.valid_until_ts" in out
    assert "FAIL  signed_request" in out  # nothing there verifies our signature
    assert out.rstrip().endswith("some checks FAILED")


async def test_unreachable_and_invalid_names() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, _ = await cli(f"127.0.0.1:{port}", "--json")
    report = json.loads(out)
    assert code == 1 and statuses(report) == {"discovery": "pass", "tls": "fail"}
    code, _, err = await cli("not a name")
    assert code == 1 and "is not a server name" in err


async def test_signed_request_needs_the_key_fetched(broken: BrokenServer) -> None:
    """A target that accepts the signed request without ever fetching our key
    checked nothing: the check fails rather than passing on a 404."""
    broken.keys = good
    got = await checks_against(broken)
    assert got["signed_request"][0] == "fail"
    assert "without ever fetching our key" in got["signed_request"][1]


async def test_signed_request_refused_signature_fails(broken: BrokenServer) -> None:
    """A target that fetches our key and then refuses the signature (401)."""
    broken.keys = good
    broken.profile = "reject"
    got = await checks_against(broken)
    assert broken.key_fetches == [200]
    assert got["signed_request"][0] == "fail"
    assert "refused with 401 M_UNAUTHORIZED" in got["signed_request"][1]


class FakeSrv:
    """SRV answers for the names a test sets up; none for the rest."""

    def __init__(self, records: dict[str, list[SrvRecord]]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def resolve_srv(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        return self.records.get(name, [])


@pytest.fixture
async def well_known() -> AsyncIterator[tuple[dict[str, Any], str]]:
    """A plain-HTTP ``.well-known/matrix/server`` on loopback: answers per
    host (the dict, filled by the test; 404 for the rest) and its URL base."""
    answers: dict[str, Any] = {}

    async def serve(request: web.Request) -> web.Response:
        host = request.match_info["host"]
        if host not in answers:
            return web.json_response({}, status=404)
        return web.json_response(answers[host])

    app = web.Application()
    app.router.add_get("/{host}/.well-known/matrix/server", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    yield answers, f"http://127.0.0.1:{sock.getsockname()[1]}"
    await runner.cleanup()


@pytest.mark.parametrize("how", ["well-known", "srv", "default"])
async def test_discovery_labels(
    how: str, concord_node: Node, well_known: tuple[dict[str, Any], str]
) -> None:
    """Spec "Resolving server names": delegation by ``.well-known`` (to the
    node), an SRV record (to the node), and neither (port 8448), each named."""
    answers, base = well_known
    port = int(concord_node.server_name.rsplit(":", 1)[1])
    name = f"{how}.test"
    srv = FakeSrv({})
    if how == "well-known":
        answers[name] = {"m.server": concord_node.server_name}
    elif how == "srv":
        srv.records[f"_matrix-fed._tcp.{name}"] = [SrvRecord("127.0.0.1", port)]
    async with aiohttp.ClientSession() as session:
        discovery = ServerDiscovery(
            session, RealClock(), srv_resolver=srv,
            well_known_url=lambda host: f"{base}/{host}/.well-known/matrix/server",
        )
        report = await run_checks(name, ssl_context=_ssl_context(verify=False),
                                  discovery=discovery)
    got = {c.name: (c.status, c.detail) for c in report.checks}
    expected = {
        "well-known": f"127.0.0.1:{port}: delegated by .well-known to 127.0.0.1:{port}",
        "srv": f"127.0.0.1:{port}: SRV record",
        "default": f"{name}:8448: default port 8448 (no .well-known, no SRV)",
    }[how]
    assert got["discovery"] == ("pass", expected)
    if how == "default":
        assert got["tls"][0] == "fail"  # nothing answers for default.test
    else:
        assert got["tls"][0] == "pass"
        assert got["keys.server_name"][0] == "fail"  # the node is not {how}.test
