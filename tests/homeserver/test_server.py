"""HomeServer in-process: real listeners on 127.0.0.1 port 0, real databases."""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from federation.errors import Codes, MatrixError
from homeserver.cli.generate_config import write_self_signed_certificate
from homeserver.config import HomeserverConfig, parse_config
from homeserver.http.json import read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest import REGISTRARS
from homeserver.server import HomeServer, StartupError

StartFn = Callable[..., Awaitable[HomeServer]]


def make_config(tmp_path: Path, **extra: Any) -> HomeserverConfig:
    key_path = tmp_path / "signing.key"
    if not key_path.exists():
        buf = io.StringIO()
        write_signing_keys(buf, [generate_signing_key("t1")])
        key_path.write_text(buf.getvalue())
    raw: dict[str, Any] = {
        "server_name": "hs.test",
        "data_dir": str(tmp_path),
        "database": {"url": f"sqlite://{tmp_path / 'hs.db'}"},
        "listeners": [
            {"type": "client", "port": 0},
            {"type": "federation", "port": 0},
            {"type": "metrics", "port": 0},
        ],
        "max_request_size": "2K",
    }
    raw.update(extra)
    return parse_config(raw, base_dir=str(tmp_path), env={})


class EchoServlet(Servlet):
    """Test-only: exercises the JSON body helper and the error middleware."""

    PATTERNS = ("/_test/echo",)

    async def on_POST(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        return 200, await read_json_body(request)

    async def on_PUT(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        raise MatrixError(403, Codes.FORBIDDEN, "no puts")

    async def on_DELETE(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("a bug with a secret inside")


def with_echo(app: web.Application, hs: HomeServer) -> None:
    EchoServlet().register(app)


@pytest.fixture
async def start() -> AsyncIterator[StartFn]:
    started: list[HomeServer] = []

    async def _start(config: HomeserverConfig, **kwargs: Any) -> HomeServer:
        kwargs.setdefault("clock", FakeClock())
        hs = await HomeServer.start(config, **kwargs)
        started.append(hs)
        return hs

    yield _start
    for hs in reversed(started):
        await hs.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_health_versions_and_ports(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession
) -> None:
    hs = await start(make_config(tmp_path))
    ports = hs.listening_ports
    assert set(ports) == {"client", "federation", "metrics"}
    assert all(p > 0 for ps in ports.values() for p in ps)
    assert hs.base_url("client") == f"http://127.0.0.1:{ports['client'][0]}"
    for kind in ("client", "federation"):
        async with client.get(hs.base_url(kind) + "/health") as r:
            assert (r.status, await r.text()) == (200, "OK")
    async with client.get(hs.base_url() + "/_matrix/client/versions") as r:
        assert r.status == 200
        body = await r.json()
    assert body == {"versions": [f"v1.{n}" for n in range(1, 13)], "unstable_features": {}}
    assert hs.database.engine == "sqlite"
    assert hs.signing_key.version == "t1"


async def test_errors_are_matrix_json(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    registrars = {**REGISTRARS, "client": [*REGISTRARS["client"], with_echo]}
    hs = await start(make_config(tmp_path), registrars=registrars)
    base = hs.base_url()

    async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with client.request(method, base + path, **kw) as r:
            return r.status, await r.json()

    assert await call("GET", "/_matrix/client/v3/nope") == (
        404,
        {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"},
    )
    status, body = await call("POST", "/_matrix/client/versions")
    assert (status, body["errcode"]) == (405, "M_UNRECOGNIZED")
    assert await call("POST", "/_test/echo", json={"a": [1, "b"]}) == (200, {"a": [1, "b"]})
    status, body = await call("POST", "/_test/echo", data=b"{not json")
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call("POST", "/_test/echo", data=b"")
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call("POST", "/_test/echo", data=b"[1]")
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await call("POST", "/_test/echo", data=b'{"k": "' + b"x" * 3000 + b'"}')
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    assert await call("PUT", "/_test/echo") == (403, {"errcode": "M_FORBIDDEN", "error": "no puts"})
    with caplog.at_level("ERROR", logger="homeserver.http.errors"):
        assert await call("DELETE", "/_test/echo") == (
            500,
            {"errcode": "M_UNKNOWN", "error": "Internal server error"},
        )
    assert "a bug with a secret inside" in caplog.text  # logged with traceback...
    assert "Traceback" in caplog.text


async def test_chunked_body_over_limit_is_413(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession
) -> None:
    registrars = {**REGISTRARS, "client": [*REGISTRARS["client"], with_echo]}
    hs = await start(make_config(tmp_path), registrars=registrars)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"k": "'
        yield b"x" * 4000
        yield b'"}'

    async with client.post(hs.base_url() + "/_test/echo", data=chunks()) as r:
        assert r.status == 413
        assert (await r.json())["errcode"] == "M_TOO_LARGE"


async def test_cors_on_client_api_only(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession
) -> None:
    hs = await start(make_config(tmp_path))
    async with client.options(
        hs.base_url() + "/_matrix/client/v3/login",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    ) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    async with client.get(hs.base_url() + "/nope") as r:
        assert r.status == 404
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    async with client.get(hs.base_url("federation") + "/health") as r:
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_metrics_count_requests_by_servlet(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession
) -> None:
    hs = await start(make_config(tmp_path))
    for _ in range(3):
        async with client.get(hs.base_url() + "/_matrix/client/versions") as r:
            assert r.status == 200
    async with client.get(hs.base_url() + "/whatever") as r:
        assert r.status == 404
    async with client.get(hs.base_url("metrics") + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert (
        'concord_http_requests_total{listener="client",method="GET",'
        'servlet="/_matrix/client/versions",status="200"} 3.0'
    ) in text
    assert 'servlet="unmatched",status="404"} 1.0' in text
    assert "concord_http_request_duration_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text


async def test_federation_tls_listener(
    tmp_path: Path, start: StartFn, client: aiohttp.ClientSession
) -> None:
    write_self_signed_certificate("127.0.0.1", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    cfg = make_config(
        tmp_path,
        listeners=[
            {
                "type": "federation",
                "port": 0,
                "tls": True,
                "tls_certificate_path": "c.pem",
                "tls_private_key_path": "k.pem",
            }
        ],
    )
    hs = await start(cfg)
    url = hs.base_url("federation")
    assert url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    async with client.get(url + "/health", ssl=trusting) as r:
        assert (r.status, await r.text()) == (200, "OK")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with client.get(url + "/health", ssl=ssl.create_default_context()):
            pass


async def test_postgres(postgres_url: str, tmp_path: Path, start: StartFn) -> None:
    hs = await start(make_config(tmp_path, database={"url": postgres_url}))
    assert hs.database.engine == "postgres"
    assert await hs.database.fetchval("SELECT COUNT(*) FROM schema_migrations") > 0


async def test_port_in_use_is_a_clear_startup_error(tmp_path: Path, start: StartFn) -> None:
    first = await start(make_config(tmp_path))
    port = first.listening_ports["client"][0]
    with pytest.raises(StartupError, match=rf"client listener: cannot listen on 127.0.0.1:{port}"):
        await start(make_config(tmp_path, listeners=[{"type": "client", "port": port}]))


async def test_missing_signing_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signing_key_path="absent.key")
    with pytest.raises(StartupError, match="absent.key does not exist; create it with"):
        await HomeServer.start(cfg)


async def test_stop_is_idempotent_and_closes_listeners(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    hs = await HomeServer.start(make_config(tmp_path), clock=FakeClock())
    url = hs.base_url()
    await hs.stop()
    await hs.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(url + "/health"):
            pass
