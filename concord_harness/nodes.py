"""One Concord node of a harness federation: config, database, process.

A node is named ``127.0.0.1:PORT`` and serves federation over TLS (a
self-signed certificate) on exactly that port, so any server on this host —
another Concord node, or a Synapse a test started — can reach it by name
(Server-Server API, "Resolving server names", step 2: an IP literal with a
port). Its client listener is plain HTTP on another loopback port. Both ports
are picked before the node starts, below Linux's ephemeral range (where
outgoing connections take their ports), and kept across restarts.

The config is built by ``homeserver generate-config``'s own code
(:func:`homeserver.cli.generate_config.build_config`) and then adjusted for a
test: TLS with a self-signed certificate, ``federation.verify_certificates:
false``, open registration with cheap password hashes, and
``federation.destination_overrides`` routing every other node through the
harness's fault proxies.

``mode="inprocess"`` runs :class:`~homeserver.server.HomeServer` in the test's
event loop (on a :class:`~concord_harness.clock.SkewableClock`);
``mode="subprocess"`` runs ``python -m homeserver run`` with the generated
YAML file, which is what an operator runs, and can be SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yaml

from concord_harness.client import Client, register
from concord_harness.clock import SkewableClock
from federation.clock import RealClock
from homeserver.cli.generate_config import build_config, write_self_signed_certificate
from homeserver.config import HomeserverConfig, parse_config
from homeserver.key_rotation import rotate_signing_key
from homeserver.signing_key import generate_signing_key_file, key_id_of, read_signing_key_file

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "Engine",
    "Mode",
    "Node",
    "NodeStartError",
    "pick_port",
    "postgres_server_url",
]

logger = logging.getLogger(__name__)

Engine = Literal["sqlite", "postgres"]
Mode = Literal["inprocess", "subprocess"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Ports handed to nodes: below Linux's default ephemeral range (32768-60999),
#: so an outgoing connection cannot take one between the pick and the bind.
PORT_RANGE = (20000, 32000)
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_rng = random.SystemRandom()


class NodeStartError(Exception):
    """A node did not start; ``port_conflict`` says whether another port may help."""

    def __init__(self, message: str, *, port_conflict: bool = False) -> None:
        super().__init__(message)
        self.port_conflict = port_conflict


def postgres_server_url() -> str:
    """The PostgreSQL server the harness creates databases on
    (``CONCORD_TEST_POSTGRES_URL``, else the local default)."""
    return os.environ.get("CONCORD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def pick_port(taken: set[int] | None = None) -> int:
    """A loopback port that was free a moment ago, from :data:`PORT_RANGE`."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = _rng.randrange(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise NodeStartError(f"no free port in {PORT_RANGE}", port_conflict=True)


def _with_database(url: str, dbname: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, p.fragment))


async def create_postgres_database() -> str:
    """A fresh, empty PostgreSQL database on :func:`postgres_server_url`; its URL."""
    import asyncpg

    dbname = f"concord_harness_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_server_url(), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await admin.close()
    return _with_database(postgres_server_url(), dbname)


async def drop_postgres_database(url: str) -> None:
    import asyncpg

    dbname = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(postgres_server_url(), timeout=10)
    try:
        # FORCE: a SIGKILLed node leaves its connections for the server to reap.
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await admin.close()


def _set_pdeathsig() -> None:
    # The node dies with the test process, even when that is SIGKILLed.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Node:
    """A Concord node started by the harness. Made by :class:`~concord_harness.Federation`."""

    def __init__(
        self,
        *,
        label: str,
        directory: Path,
        engine: Engine,
        mode: Mode,
        tenants_per_node: int,
        session: aiohttp.ClientSession,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in ("inprocess", "subprocess"):
            raise ValueError(f"mode must be 'inprocess' or 'subprocess', got {mode!r}")
        if engine not in ("sqlite", "postgres"):
            raise ValueError(f"engine must be 'sqlite' or 'postgres', got {engine!r}")
        if tenants_per_node < 1:
            raise ValueError(f"tenants_per_node must be at least 1, got {tenants_per_node}")
        self.label = label
        self.directory = directory
        self.engine: Engine = engine
        self.mode: Mode = mode
        self._session = session
        self._tenants_per_node = tenants_per_node
        self._extra_config = dict(extra_config or {})
        self.federation_port = 0
        self.client_port = 0
        self.database_url = ""
        #: Wall clock of an in-process node; ``None`` in subprocess mode.
        self.clock: SkewableClock | None = SkewableClock() if mode == "inprocess" else None
        self.hs: Any = None  # HomeServer while an in-process node runs
        self.process: asyncio.subprocess.Process | None = None
        self._overrides: dict[str, str] = {}
        self.config: HomeserverConfig | None = None
        #: Users registered through :meth:`register_user` (``converged`` reads through them).
        self.clients: list[Client] = []

    # Identity and addresses

    @property
    def server_name(self) -> str:
        """The node's (first tenant's) server name, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.federation_port}"

    @property
    def tenants(self) -> list[str]:
        """Every server name this node hosts, its own first."""
        extra = [
            f"tenant{j}.{self.label}.test" for j in range(2, self._tenants_per_node + 1)
        ]
        return [self.server_name, *extra]

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def federation_url(self) -> str:
        return f"https://127.0.0.1:{self.federation_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        """Standard error of a subprocess node."""
        return self.directory / "homeserver.log"

    @property
    def running(self) -> bool:
        if self.mode == "inprocess":
            return self.hs is not None
        return self.process is not None and self.process.returncode is None

    def __repr__(self) -> str:
        return f"<Node {self.label} {self.server_name} {self.mode}/{self.engine}>"

    # Set-up (called by Federation)

    async def prepare(self, taken_ports: set[int]) -> None:
        """Choose ports, create the database, key and certificate (once)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.federation_port = pick_port(taken_ports)
        self.client_port = pick_port(taken_ports)
        if not self.database_url:
            if self.engine == "postgres":
                self.database_url = await create_postgres_database()
            else:
                self.database_url = f"sqlite://{self.directory / 'homeserver.db'}"
        key_path = self.directory / "signing.key"
        if not key_path.exists():
            generate_signing_key_file(str(key_path))
        secret_path = self.directory / "registration_shared_secret"
        if not secret_path.exists():
            secret_path.write_text(secrets.token_urlsafe(32) + "\n")
            secret_path.chmod(0o600)
        if not (self.directory / "tls.crt").exists():
            write_self_signed_certificate(
                "127.0.0.1", str(self.directory / "tls.crt"), str(self.directory / "tls.key")
            )

    def raw_config(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        """The node's config as YAML-ready data (what ``config_path`` holds)."""
        args = argparse.Namespace(
            server_name=self.server_name,
            client_port=self.client_port,
            federation_port=self.federation_port,
            metrics_port=None,
            bind="127.0.0.1",
            database_url=self.database_url,
            self_signed_tls=True,
            no_verify_federation_tls=True,
        )
        raw = build_config(args, str(self.directory))
        raw["federation"]["destination_overrides"] = dict(overrides)
        raw["federation"]["trusted_key_servers"] = []
        # Faults are the point of a harness federation: a destination that
        # failed is retried within 2 s rather than 10 s doubling to a day, so
        # a healed partition or a restarted node catches up within a test's
        # deadline, and no delivery is given up (dead-lettered) meanwhile.
        raw["federation"]["retry_min_interval"] = "250ms"
        raw["federation"]["retry_max_interval"] = "2s"
        raw["federation"]["max_delivery_attempts"] = 100_000
        raw["enable_registration"] = True
        # bcrypt at its minimum cost: registering a user takes 1 ms, not 250.
        raw["password_hash_rounds"] = 4
        raw["shutdown_timeout"] = "2s"
        raw["logging"] = {"level": "INFO"}
        if self._tenants_per_node > 1:
            raw["tenants"] = [
                {"server_name": name, "enable_registration": True} for name in self.tenants[1:]
            ]
        _deep_update(raw, self._extra_config)
        return raw

    def write_config(self, overrides: Mapping[str, str]) -> None:
        self._overrides = dict(overrides)
        raw = self.raw_config(overrides)
        # Validated here so a bad extra_config fails with the loader's message.
        self.config = parse_config(raw, base_dir=str(self.directory), env={})
        self.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    # Life cycle

    async def start(self) -> None:
        if self.running:
            return
        if self.mode == "inprocess":
            await self._start_inprocess()
        else:
            await self._start_subprocess()

    async def _start_inprocess(self) -> None:
        from homeserver.server import HomeServer, StartupError

        self.config = parse_config(
            yaml.safe_load(self.config_path.read_text()), base_dir=str(self.directory), env={}
        )
        try:
            self.hs = await HomeServer.start(self.config, clock=self.clock)
        except StartupError as e:
            raise NodeStartError(
                f"{self.label}: {e}", port_conflict="cannot listen" in str(e)
            ) from None

    async def _start_subprocess(self) -> None:
        log = open(self.log_path, "ab")  # noqa: ASYNC230 - a local file, opened once
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "homeserver",
                "run",
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
            )
        finally:
            log.close()
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        clock = RealClock()
        deadline = clock.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                tail = self.log_tail()
                self.process = None
                raise NodeStartError(
                    f"{self.label}: homeserver exited during start-up:\n{tail}",
                    port_conflict="cannot listen" in tail,
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(
                    self.client_url + "/health", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            if clock.monotonic() > deadline:
                await self.kill()
                raise NodeStartError(
                    f"{self.label}: not healthy after {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}"
                )
            await clock.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """Graceful stop: in-flight requests finish (``shutdown_timeout``)."""
        if self.mode == "inprocess":
            if self.hs is not None:
                hs, self.hs = self.hs, None
                await hs.stop()
            return
        proc = self.process
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.process = None

    async def kill(self) -> None:
        """Crash the node. Subprocess: SIGKILL (nothing is flushed or drained).
        In-process: the HomeServer is stopped at once; its in-flight requests
        are cut after ``shutdown_timeout`` (a process cannot SIGKILL itself)."""
        if self.mode == "inprocess":
            await self.stop()
            return
        proc = self.process
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        self.process = None

    async def restart(self) -> None:
        """Stop (gracefully) and start again on the same ports and database."""
        await self.stop()
        await self.start()

    async def rotate_signing_key(self, overlap_ms: int = 3_600_000) -> str:
        """Rotate the signing key of the running node as an operator does
        (``homeserver keys rotate``, docs/usage/key_rotation.md); returns the
        new key ID once the node publishes it.

        No restart: an in-process node rotates through the same code and
        re-reads its keys at once; a subprocess node gets the command, then
        SIGHUP. The old key stays published under ``old_verify_keys`` until
        ``now + overlap_ms``, so events it signed stay verifiable.
        """
        if not self.running or self.config is None:
            raise RuntimeError(f"{self.label} is not running")
        path = self.config.signing_key_path
        if self.mode == "inprocess":
            assert self.hs is not None
            result = await rotate_signing_key(
                self.hs.database, self.server_name, path,
                now_ms=self.hs.clock.time_ms(), overlap_ms=overlap_ms,
            )
            await self.hs.keys.refresh_local()
            key_id = result.new_key_id
        else:
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "homeserver", "keys", "rotate",
                "--config", str(self.config_path), "--overlap", f"{overlap_ms // 1000}s",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await cli.communicate()
            if cli.returncode != 0:
                raise RuntimeError(f"homeserver keys rotate failed: {out.decode(errors='replace')}")
            key_id = key_id_of(read_signing_key_file(path)[0])
            assert self.process is not None
            self.process.send_signal(signal.SIGHUP)
        await self._wait_publishes(key_id)
        return key_id

    async def _wait_publishes(self, key_id: str) -> None:
        """Until ``/_matrix/key/v2/server`` names ``key_id`` a current key."""
        clock = RealClock()
        deadline = clock.monotonic() + STARTUP_TIMEOUT_S
        url = self.federation_url + "/_matrix/key/v2/server"
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self._session.get(
                    url, ssl=False, timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if key_id in (await resp.json()).get("verify_keys", {}):
                        return
            if clock.monotonic() > deadline:
                raise RuntimeError(f"{self.label} does not publish {key_id}")
            await clock.sleep(0.05)

    def skew_clock(self, seconds: float) -> None:
        """Make the node's wall clock ``seconds`` fast (negative: slow); in-process only."""
        if self.clock is None:
            raise NotImplementedError(
                "clock skew needs mode='inprocess' (a subprocess node reads the OS clock)"
            )
        self.clock.skew(seconds)

    async def cleanup(self) -> None:
        """Stop and drop the node's PostgreSQL database (files go with the temp dir)."""
        await self.kill() if self.mode == "subprocess" else await self.stop()
        if self.engine == "postgres" and self.database_url:
            await drop_postgres_database(self.database_url)
            self.database_url = ""

    # Users

    async def register_user(
        self, localpart: str, *, tenant: str | None = None, password: str | None = None
    ) -> Client:
        """Register ``@localpart:<tenant>`` (default: the node's own name) and
        return a logged-in :class:`~concord_harness.client.Client`."""
        host = tenant or self.server_name
        if host not in self.tenants:
            raise ValueError(f"{self.label} hosts {self.tenants}, not {tenant}")
        # A node with several tenants routes client requests by Host, and the
        # client listener's own address (127.0.0.1:client_port) names none.
        client = await register(
            self._session, self.client_url, localpart, password=password, host=host
        )
        self.clients.append(client)
        return client


def _deep_update(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value

