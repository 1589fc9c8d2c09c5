"""Run a real Synapse as a federation peer on loopback, for the interop tests.

Three layers, each usable alone:

* :func:`ensure_synapse_venv` installs ``matrix-synapse`` (pinned to
  :data:`SYNAPSE_VERSION`) into its own virtualenv under the user's cache
  directory, outside the repository, and reuses it while it still imports.
  A lock file keeps parallel test processes from installing at once.
* :func:`start_synapse` writes a config with ``--generate-config``, patches it
  for loopback federation (see ``docs/development/interop.md`` for why each
  setting), starts ``synapse.app.homeserver`` and waits until it answers.
  :meth:`SynapseServer.stop` ends it (SIGTERM, then SIGKILL).
* :class:`MatrixClient` is a thin async Client-Server API client (aiohttp)
  with the few calls the tests need: rooms, messages, state, sync; nothing in
  it is Synapse-specific. :class:`SynapseClient` adds Synapse's admin API
  (shared-secret registration, federation backoff reset) and its notary view.

Synapse is named ``127.0.0.1:PORT``: an IP literal with an explicit port, so
peers reach it at exactly that address without DNS, ``.well-known`` or SRV
(Server-Server API, "Resolving server names", steps 1 and 2). Its one TLS
listener serves both the client and the federation APIs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from homeserver.cli.generate_config import write_self_signed_certificate

__all__ = [
    "REGISTRATION_SHARED_SECRET",
    "SYNAPSE_VERSION",
    "SynapseClient",
    "SynapseError",
    "SynapseInstallError",
    "SynapseRequestError",
    "SynapseServer",
    "SynapseStartError",
    "SynapseUser",
    "ensure_synapse_venv",
    "MatrixClient",
    "free_port",
    "start_synapse",
    "synapse_venv_dir",
]

#: The Synapse the interop tests run against. Bump deliberately: a new version
#: gets a new cache directory, so an old venv is never half-upgraded.
SYNAPSE_VERSION = "1.163.2"

#: Fixed so tests (and a human debugging) can register users with the admin API.
REGISTRATION_SHARED_SECRET = "concord-interop-shared-secret"

PIP_TIMEOUT_S = 900.0
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Only "address in use" earns a retry: free_port() can lose a race.
START_ATTEMPTS = 3

_MARKER = ".concord-installed"


class SynapseError(Exception):
    """Base class of this module's errors; messages are meant for a test report."""


class SynapseInstallError(SynapseError):
    """matrix-synapse could not be installed (no registry, pip failure, broken venv)."""


class SynapseStartError(SynapseError):
    """Synapse did not come up; the message quotes the end of its log."""


class SynapseRequestError(SynapseError):
    """A Synapse API call answered with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {path} -> {status} {errcode or ''}: {body!r}"[:2000])

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


# --------------------------------------------------------------------------
# Installing


def synapse_venv_dir(version: str = SYNAPSE_VERSION) -> Path:
    """``$XDG_CACHE_HOME/concord/synapse-venv-<version>`` (``~/.cache`` by default).

    ``CONCORD_SYNAPSE_VENV`` overrides the whole path (e.g. a venv made by hand).
    """
    override = os.environ.get("CONCORD_SYNAPSE_VENV")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "concord" / f"synapse-venv-{version}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed_version(venv: Path) -> str | None:
    """The importable Synapse version in ``venv``, or None if it does not import."""
    python = _venv_python(venv)
    if not python.exists():
        return None
    try:
        out = subprocess.run(
            [str(python), "-c", "import synapse; print(synapse.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _usable(venv: Path, version: str) -> bool:
    marker = venv / _MARKER
    if not marker.exists() or marker.read_text().strip() != version:
        return False
    return _installed_version(venv) == version


def _tail(text: str, lines: int = 30) -> str:
    # pip on this machine prints one "Location ... is ignored" warning per
    # package; they drown the line that says what went wrong.
    kept = [ln for ln in text.splitlines() if "is ignored: it is neither" not in ln]
    return "\n".join(kept[-lines:])


def ensure_synapse_venv(
    version: str = SYNAPSE_VERSION,
    *,
    venv: Path | None = None,
    base_python: str = sys.executable,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Return the ``python`` of a venv with ``matrix-synapse==version``, installing it if needed.

    The venv counts as usable only if its marker file names ``version`` and
    ``import synapse`` reports that version; otherwise it is rebuilt from
    scratch. Installation holds an exclusive lock on ``<venv>.lock``; a process
    that waited on the lock re-checks before doing anything. Raises
    :class:`SynapseInstallError` with pip's own last lines on failure.
    """
    venv = venv or synapse_venv_dir(version)
    if _usable(venv, version):
        return _venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / (venv.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _usable(venv, version):
                return _venv_python(venv)
            if log:
                log(f"installing matrix-synapse=={version} into {venv}")
            _install(venv, version, base_python)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return _venv_python(venv)


def _install(venv: Path, version: str, base_python: str) -> None:
    if venv.exists():
        shutil.rmtree(venv)

    def run(argv: list[str], what: str) -> None:
        try:
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
        except subprocess.TimeoutExpired as e:
            raise SynapseInstallError(
                f"{what} did not finish within {PIP_TIMEOUT_S:.0f} s "
                f"(is the package registry reachable?)\n{_tail(str(e.stdout or ''))}"
            ) from None
        except OSError as e:
            raise SynapseInstallError(f"{what}: cannot run {argv[0]}: {e}") from None
        if out.returncode != 0:
            raise SynapseInstallError(
                f"{what} failed (exit {out.returncode}); is the package registry "
                f"reachable?\n{_tail(out.stdout + out.stderr)}"
            )

    run([base_python, "-m", "venv", str(venv)], f"creating the venv {venv}")
    run(
        [
            str(_venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--no-input",
            f"matrix-synapse=={version}",
        ],
        f"pip install matrix-synapse=={version}",
    )
    found = _installed_version(venv)
    if found != version:
        raise SynapseInstallError(
            f"installed matrix-synapse=={version} into {venv}, but it imports as {found!r}"
        )
    # Written last: its presence means every step above succeeded.
    (venv / _MARKER).write_text(version + "\n")


# --------------------------------------------------------------------------
# Ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Needed because a server name must carry its port before the server binds
    it; callers retry if they lose the race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------
# Config


def _high(per_second: float = 10_000, burst_count: int = 100_000) -> dict[str, Any]:
    return {"per_second": per_second, "burst_count": burst_count}


def patch_config(
    config: dict[str, Any],
    *,
    port: int,
    data_dir: Path,
    cert_path: Path,
    key_path: Path,
    log_config_path: Path,
) -> dict[str, Any]:
    """Turn a generated Synapse config into a loopback federation peer (in place)."""
    config.update(
        {
            "server_name": f"127.0.0.1:{port}",
            "public_baseurl": f"https://127.0.0.1:{port}/",
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    # Synapse talks to peers only over HTTPS, at exactly host:port.
                    "tls": True,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "federation"], "compress": False}],
                }
            ],
            "tls_certificate_path": str(cert_path),
            "tls_private_key_path": str(key_path),
            "federation_verify_certificates": False,
            # Loopback is in the default blocklists; 1.163 still reads these names.
            "ip_range_blacklist": [],
            "federation_ip_range_blacklist": [],
            # With unverified TLS Synapse refuses to start while a notary is configured.
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            # The defaults back off a failed destination for 10 minutes, doubling
            # up to days, and keep that in the database.
            "federation": {
                "destination_min_retry_interval": "1s",
                "destination_retry_multiplier": 2,
                "destination_max_retry_interval": "10s",
            },
            "room_list_publication_rules": [{"action": "allow"}],
            "allow_public_rooms_over_federation": True,
            "allow_public_rooms_without_auth": True,
            "registration_shared_secret": REGISTRATION_SHARED_SECRET,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "database": {
                "name": "sqlite3",
                "args": {"database": str(data_dir / "homeserver.db")},
            },
            "media_store_path": str(data_dir / "media_store"),
            "pid_file": str(data_dir / "homeserver.pid"),
            "log_config": str(log_config_path),
            "report_stats": False,
            # Tests send bursts that the defaults answer with 429s, admins included.
            "rc_message": _high(),
            "rc_registration": _high(),
            "rc_registration_token_validity": _high(),
            "rc_login": {
                "address": _high(),
                "account": _high(),
                "failed_attempts": _high(),
            },
            "rc_admin_redaction": _high(),
            "rc_joins": {"local": _high(), "remote": _high()},
            "rc_joins_per_room": _high(),
            "rc_key_requests": _high(),
            "rc_3pid_validation": _high(),
            "rc_invites": {
                "per_room": _high(),
                "per_user": _high(),
                "per_issuer": _high(),
            },
            "rc_third_party_invite": _high(),
            "rc_media_create": _high(),
            "rc_presence": {"per_user": _high()},
            "rc_delayed_event_mgmt": _high(),
            "rc_room_creation": _high(),
            "rc_reports": _high(),
            "rc_user_directory": _high(),
            "rc_profile": _high(),
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 10_000,
                "sleep_delay": 1,
                "reject_limit": 10_000,
                "concurrent": 1000,
            },
        }
    )
    return config


def _log_config(log_path: Path, level: str) -> dict[str, Any]:
    # Synapse's generated log config buffers INFO lines; a test that failed
    # must find everything on disk, so write through.
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_path),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


# --------------------------------------------------------------------------
# The running server


@dataclass
class SynapseServer:
    """A started Synapse. ``server_name`` is ``127.0.0.1:PORT``; both APIs live on ``base_url``."""

    python: Path
    workdir: Path
    port: int
    config_path: Path
    log_path: Path
    stderr_path: Path
    cert_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts exactly Synapse's own self-signed certificate (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for p in (self.stderr_path, self.log_path):
            if p.exists():
                text = p.read_text(errors="replace").splitlines()
                if text:
                    parts.append(f"--- {p} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no log written)"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[SynapseClient]:
        """A :class:`SynapseClient` on a fresh aiohttp session in the running event loop."""
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context())
        ) as session:
            yield SynapseClient(self, session)


def start_synapse(
    python: Path,
    workdir: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    log_level: str = "INFO",
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> SynapseServer:
    """Generate a config in ``workdir``, start Synapse and wait until it answers.

    ``overrides`` are applied on top of the patched config (top-level keys).
    Raises :class:`SynapseStartError` quoting Synapse's log if it exits or does
    not answer ``/_matrix/client/versions`` within ``startup_timeout_s``.
    """
    last: SynapseStartError | None = None
    for attempt in range(START_ATTEMPTS):
        d = workdir / f"attempt{attempt}" if attempt else workdir
        d.mkdir(parents=True, exist_ok=True)
        server = _configure(python, d, free_port(), overrides or {}, log_level)
        try:
            _launch(server, startup_timeout_s)
            return server
        except SynapseStartError as e:
            server.stop()
            if "Address already in use" not in str(e):
                raise
            last = e
    assert last is not None
    raise last


def _configure(
    python: Path, d: Path, port: int, overrides: Mapping[str, Any], log_level: str
) -> SynapseServer:
    data_dir = d / "data"
    data_dir.mkdir(exist_ok=True)
    config_path = d / "homeserver.yaml"
    gen = subprocess.run(
        [
            str(python),
            "-m",
            "synapse.app.homeserver",
            "--generate-config",
            "--server-name",
            f"127.0.0.1:{port}",
            "--config-path",
            str(config_path),
            "--data-directory",
            str(data_dir),
            "--report-stats=no",
        ],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if gen.returncode != 0:
        raise SynapseStartError(
            f"synapse --generate-config failed (exit {gen.returncode}):\n"
            f"{_tail(gen.stdout + gen.stderr)}"
        )
    config = yaml.safe_load(config_path.read_text())
    cert_path, key_path = d / "tls.crt", d / "tls.key"
    write_self_signed_certificate("127.0.0.1", cert_path, key_path)
    log_path = d / "homeserver.log"
    log_config_path = d / "log.yaml"
    log_config_path.write_text(yaml.safe_dump(_log_config(log_path, log_level)))
    patch_config(
        config,
        port=port,
        data_dir=data_dir,
        cert_path=cert_path,
        key_path=key_path,
        log_config_path=log_config_path,
    )
    config.update(overrides)
    config_path.write_text(yaml.safe_dump(config, sort_keys=True))
    return SynapseServer(
        python=python,
        workdir=d,
        port=port,
        config_path=config_path,
        log_path=log_path,
        stderr_path=d / "stderr.log",
        cert_path=cert_path,
    )


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the test process dies.

    Teardown normally stops Synapse; this covers a pytest killed outright
    (CI timeout, SIGKILL), which would otherwise leave a 110 MB orphan.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: teardown is the only stop


def _launch(server: SynapseServer, startup_timeout_s: float) -> None:
    with open(server.stderr_path, "wb") as err:
        server.process = subprocess.Popen(
            [str(server.python), "-m", "synapse.app.homeserver", "-c", str(server.config_path)],
            cwd=server.workdir,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    ctx = server.ssl_context()
    url = server.base_url + "/_matrix/client/versions"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                if resp.status == 200 and "versions" in json.load(resp):
                    return
        except (OSError, ValueError):
            pass  # not listening yet
        # Waiting on the process doubles as the poll interval and notices an exit.
        try:
            code = server.process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            raise SynapseStartError(
                f"Synapse exited with code {code} during start-up "
                f"(config {server.config_path}).\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise SynapseStartError(
                f"Synapse did not answer {url} within {startup_timeout_s:.0f} s.\n"
                f"{server.log_tail()}"
            )


# --------------------------------------------------------------------------
# Client-Server API helpers


@dataclass(frozen=True)
class SynapseUser:
    user_id: str
    access_token: str
    device_id: str
    password: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class MatrixClient:
    """Just enough of the Client-Server API to drive a homeserver from a test.

    Nothing here is Synapse-specific, so the same calls can drive a Concord
    node's client listener. Every call checks the status it expects and raises
    :class:`SynapseRequestError` otherwise, carrying the server's errcode.
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self._txn = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: SynapseUser | None = None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        expect: int | None = 200,
        timeout_s: float = 30.0,
    ) -> Any:
        headers = {"Authorization": f"Bearer {user.access_token}"} if user else {}
        async with self.session.request(
            method,
            self.base_url + path,
            json=body,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            if expect is not None and resp.status != expect:
                raise SynapseRequestError(method, path, resp.status, parsed)
            return parsed

    def _next_txn(self) -> str:
        self._txn += 1
        return f"concord-{secrets.token_hex(4)}-{self._txn}"

    # -- server and users

    async def versions(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/_matrix/client/versions")
        return result

    async def register_open(self, localpart: str | None = None) -> SynapseUser:
        """Create a user through ``/register`` (open registration, ``m.login.dummy``)."""
        localpart = localpart or f"user-{secrets.token_hex(4)}"
        password = secrets.token_hex(8)
        body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        result = await self.request("POST", "/_matrix/client/v3/register", body=body)
        return SynapseUser(result["user_id"], result["access_token"], result["device_id"], password)

    # -- rooms

    async def create_room(
        self,
        user: SynapseUser,
        *,
        room_version: str | None = None,
        preset: str = "public_chat",
        name: str | None = None,
        topic: str | None = None,
        alias_localpart: str | None = None,
        invite: list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {"preset": preset}
        if room_version is not None:
            body["room_version"] = room_version
        if name is not None:
            body["name"] = name
        if topic is not None:
            body["topic"] = topic
        if alias_localpart is not None:
            body["room_alias_name"] = alias_localpart
        if invite:
            body["invite"] = invite
        body.update(extra or {})
        result = await self.request("POST", "/_matrix/client/v3/createRoom", user=user, body=body)
        room_id: str = result["room_id"]
        return room_id

    async def join(
        self, user: SynapseUser, room_id_or_alias: str, *, via: list[str] | None = None
    ) -> str:
        """Join a room; a bare room ID on another server needs ``via``."""
        params = [("via", s) for s in via or []] + [("server_name", s) for s in via or []]
        async with self.session.post(
            f"{self.base_url}/_matrix/client/v3/join/{_q(room_id_or_alias)}",
            params=params,
            json={},
            headers={"Authorization": f"Bearer {user.access_token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            parsed = await resp.json(content_type=None)
            if resp.status != 200:
                raise SynapseRequestError("POST", f"/join/{room_id_or_alias}", resp.status, parsed)
        room_id: str = parsed["room_id"]
        return room_id

    async def invite(self, user: SynapseUser, room_id: str, user_id: str) -> None:
        await self.request(
            "POST",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/invite",
            user=user,
            body={"user_id": user_id},
        )

    async def leave(self, user: SynapseUser, room_id: str) -> None:
        await self.request(
            "POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", user=user, body={}
        )

    async def send_event(
        self, user: SynapseUser, room_id: str, event_type: str, content: Mapping[str, Any]
    ) -> str:
        result = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{self._next_txn()}",
            user=user,
            body=dict(content),
        )
        event_id: str = result["event_id"]
        return event_id

    async def send_message(self, user: SynapseUser, room_id: str, body: str) -> str:
        return await self.send_event(
            user, room_id, "m.room.message", {"msgtype": "m.text", "body": body}
        )

    async def send_state(
        self,
        user: SynapseUser,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str = "",
    ) -> str:
        result = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}",
            user=user,
            body=dict(content),
        )
        event_id: str = result["event_id"]
        return event_id

    async def state(self, user: SynapseUser, room_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request(
            "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state", user=user
        )
        return result

    async def state_event(
        self, user: SynapseUser, room_id: str, event_type: str, state_key: str = ""
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}",
            user=user,
        )
        return result

    async def messages(
        self,
        user: SynapseUser,
        room_id: str,
        *,
        direction: str = "b",
        limit: int = 100,
        from_token: str | None = None,
    ) -> dict[str, Any]:
        params = {"dir": direction, "limit": str(limit)}
        if from_token is not None:
            params["from"] = from_token
        result: dict[str, Any] = await self.request(
            "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", user=user, params=params
        )
        return result

    async def all_messages(self, user: SynapseUser, room_id: str) -> list[dict[str, Any]]:
        """Every event ``user`` can page back through, oldest first."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.messages(user, room_id, from_token=token, limit=100)
            chunk = page.get("chunk", [])
            events.extend(chunk)
            if not chunk or "end" not in page:
                break
            token = page["end"]
        events.reverse()
        return events

    async def sync(
        self, user: SynapseUser, *, since: str | None = None, timeout_ms: int = 0
    ) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        result: dict[str, Any] = await self.request(
            "GET",
            "/_matrix/client/v3/sync",
            user=user,
            params=params,
            timeout_s=timeout_ms / 1000 + 30,
        )
        return result

    async def wait_for_sync(
        self,
        user: SynapseUser,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float = 20.0,
    ) -> dict[str, Any]:
        """Long-poll ``/sync`` until ``predicate(response)`` holds; fail after ``timeout_s``.

        The first call is an initial sync, so a condition already true is seen at once.
        """
        deadline = time.monotonic() + timeout_s
        since: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"sync condition not met for {user.user_id} in {timeout_s} s")
            resp = await self.sync(
                user, since=since, timeout_ms=0 if since is None else int(min(remaining, 5) * 1000)
            )
            if predicate(resp):
                return resp
            since = resp["next_batch"]


class SynapseClient(MatrixClient):
    """A :class:`MatrixClient` for the test Synapse, plus its admin API."""

    def __init__(self, server: SynapseServer, session: aiohttp.ClientSession) -> None:
        super().__init__(server.base_url, session)
        self.server = server

    async def register(
        self, localpart: str | None = None, *, admin: bool = False, password: str | None = None
    ) -> SynapseUser:
        """Create a user with the shared-secret admin API (HMAC-SHA1 over nonce, name,
        password and admin flag, as Synapse's ``register_new_matrix_user`` does)."""
        localpart = localpart or f"user-{secrets.token_hex(4)}"
        password = password or secrets.token_hex(8)
        path = "/_synapse/admin/v1/register"
        nonce = (await self.request("GET", path))["nonce"]
        flag = "admin" if admin else "notadmin"
        mac = hmac.new(
            REGISTRATION_SHARED_SECRET.encode(),
            b"\x00".join(p.encode() for p in (nonce, localpart, password, flag)),
            hashlib.sha1,
        )
        result = await self.request(
            "POST",
            path,
            body={
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return SynapseUser(result["user_id"], result["access_token"], result["device_id"], password)

    # -- federation-facing views

    async def query_server_keys(
        self, server_name: str, key_id: str | None = None
    ) -> dict[str, Any]:
        """Synapse's notary view of a server's keys, re-signed by Synapse.

        Without ``key_id`` (``GET /_matrix/key/v2/query/{serverName}``) Synapse 1.163
        serves only what it already stored and never fetches. With ``key_id``
        (``POST /_matrix/key/v2/query``) a cache miss makes it fetch from the server
        itself, check the response and store it first.
        """
        if key_id is None:
            result: dict[str, Any] = await self.request(
                "GET", f"/_matrix/key/v2/query/{_q(server_name)}"
            )
        else:
            body = {"server_keys": {server_name: {key_id: {"minimum_valid_until_ts": 0}}}}
            result = await self.request("POST", "/_matrix/key/v2/query", body=body)
        return result

    async def reset_federation_backoff(self, admin: SynapseUser, destination: str) -> None:
        """Clear Synapse's retry backoff for ``destination`` (admin API)."""
        await self.request(
            "POST",
            f"/_synapse/admin/v1/federation/destinations/{_q(destination)}/reset_connection",
            user=admin,
            body={},
        )


# --------------------------------------------------------------------------
# By hand: `python -m tests.interop.synapse install|run DIR`


def main(argv: list[str] | None = None) -> int:
    """``install`` prints the venv's python (installing if needed); ``run DIR``
    starts a Synapse configured like the tests' in DIR and keeps it up until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.interop.synapse")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install (or find) the cached Synapse venv")
    run = sub.add_parser("run", help="run a test-configured Synapse until interrupted")
    run.add_argument("workdir", type=Path)
    run.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        python = ensure_synapse_venv(log=lambda msg: print(msg, file=sys.stderr))
        if args.command == "install":
            print(python)
            return 0
        server = start_synapse(python, args.workdir.resolve(), log_level=args.log_level)
    except SynapseError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"Synapse {server.server_name} at {server.base_url}")
    print(f"config {server.config_path}\nlog    {server.log_path}")
    print(f"admin registration shared secret: {REGISTRATION_SHARED_SECRET}")
    try:
        assert server.process is not None
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
