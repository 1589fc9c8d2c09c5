"""The `homeserver` command line, run as operators run it: in a subprocess."""

from __future__ import annotations

import json
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeserver.config import load_config
from homeserver.signing_key import read_signing_key_file

HOMESERVER = [sys.executable, "-m", "homeserver"]
DEADLINE_S = 20.0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOMESERVER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def generate(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "homeserver.yaml"
    r = cli(
        "generate-config",
        "--server-name", "node.test",
        "--data-dir", str(tmp_path / "data"),
        "--output", str(out),
        "--client-port", "0",
        "--federation-port", "0",
        *extra,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


class Node:
    """A `homeserver run` subprocess whose stderr is collected by a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [*HOMESERVER, "run", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.urls: dict[str, str] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"Listening on (\S+) \((\w+)\)", line)
            if m:
                self.urls.setdefault(m.group(2), m.group(1))
            if "started for" in line:
                self.ready.set()
        self.ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_healthy(self) -> None:
        """Poll /health until it answers, against a monotonic deadline."""
        assert self.ready.wait(DEADLINE_S), self.log
        assert "client" in self.urls, self.log
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                with urllib.request.urlopen(self.urls["client"] + "/health", timeout=2) as r:
                    assert r.read() == b"OK"
                    return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("node never became healthy:\n" + self.log) from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=DEADLINE_S)
        self._reader.join(timeout=5)
        return code


def request(url: str, *, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def node_factory() -> Iterator[list[Node]]:
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        if n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait()


def test_help_describes_every_subcommand() -> None:
    for sub, words in [
        ("run", "foreground"),
        ("generate-config", "working config"),
        ("generate-keys", "ed25519"),
        ("check-config", "every problem"),
        ("migrate", "schema migration"),
    ]:
        r = cli(sub, "--help")
        assert r.returncode == 0
        assert words in r.stdout.replace("\n", " ")


@pytest.mark.slow
def test_run_serves_and_shuts_down_on_sigterm(tmp_path: Path, node_factory: list[Node]) -> None:
    config = generate(tmp_path, "--metrics-port", "0")
    config.write_text(config.read_text() + "max_request_size: 2K\n")
    node = Node(config)
    node_factory.append(node)
    node.wait_healthy()
    client = node.urls["client"]

    status, body = request(client + "/_matrix/client/versions")
    assert status == 200
    assert "v1.12" in json.loads(body)["versions"]
    status, body = request(client + "/_matrix/client/v3/unknown")
    assert (status, json.loads(body)["errcode"]) == (404, "M_UNRECOGNIZED")
    status, body = request(client + "/_matrix/client/versions", method="POST", data=b"x" * 3000)
    assert (status, json.loads(body)["errcode"]) == (413, "M_TOO_LARGE")
    status, body = request(node.urls["metrics"] + "/metrics")
    assert status == 200
    assert b'servlet="/_matrix/client/versions"' in body

    assert node.stop() == 0
    log = node.log
    assert "Concord 0.1.0 started for node.test (database: sqlite" in log
    assert "Received SIGTERM: shutting down" in log
    assert "Shutdown complete" in log
    assert re.search(r"homeserver.access: \S+ GET /_matrix/client/versions 200 ", log)
    assert "Traceback" not in log
    # The signing key's seed never reaches the log.
    seed = (tmp_path / "data" / "signing.key").read_text().split()[2]
    assert seed not in log


def test_generate_config_output_passes_check_config(tmp_path: Path) -> None:
    config = generate(tmp_path)
    r = cli("check-config", "--config", str(config))
    assert (r.returncode, r.stdout.strip()) == (0, f"{config}: OK")
    cfg = load_config(str(config))
    data = tmp_path / "data"
    assert cfg.server_name == "node.test"
    assert cfg.database.url == f"sqlite://{data / 'homeserver.db'}"
    assert [(li.type, li.port, li.tls) for li in cfg.listeners] == [
        ("client", 0, False),
        ("federation", 0, False),
    ]
    assert cfg.federation.verify_certificates is True
    assert cfg.registration_shared_secret
    for secret in (data / "signing.key", data / "registration_shared_secret", config):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # Never overwrites.
    again = cli("generate-config", "--server-name", "x.test", "--data-dir", str(data),
                "--output", str(config))  # fmt: skip
    assert again.returncode == 1 and "already exists" in again.stderr


def test_generate_config_with_tls_and_postgres(tmp_path: Path) -> None:
    config = generate(
        tmp_path,
        "--self-signed-tls",
        "--no-verify-federation-tls",
        "--database-url", "postgresql://concord@db.internal:5432/concord",
        "--bind", "0.0.0.0",
    )  # fmt: skip
    r = cli("check-config", "--config", str(config))
    assert r.returncode == 0, r.stderr
    cfg = load_config(str(config))
    fed = cfg.listeners_of("federation")[0]
    assert fed.tls and fed.tls_certificate_path == str(tmp_path / "data" / "tls.crt")
    assert fed.bind_addresses == ("0.0.0.0",)
    assert cfg.database.url == "postgresql://concord@db.internal:5432/concord"
    assert cfg.federation.verify_certificates is False
    assert not (tmp_path / "data" / "homeserver.db").exists()

    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "data" / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node.test"]


def test_generate_config_rejects_bad_flags(tmp_path: Path) -> None:
    r = cli("generate-config", "--server-name", "bad name", "--data-dir", str(tmp_path / "d"),
            "--output", str(tmp_path / "h.yaml"))  # fmt: skip
    assert r.returncode == 1 and "--server-name" in r.stderr
    assert not (tmp_path / "d").exists()
    r = cli("generate-config", "--server-name", "a.test", "--data-dir", str(tmp_path / "d"),
            "--output", str(tmp_path / "h.yaml"), "--client-port", "99999")  # fmt: skip
    assert r.returncode == 2 and "port must be between 0 and 65535" in r.stderr


def test_generate_keys(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    r = cli("generate-keys", "--output", str(out), "--key-id", "ed25519:a_1")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert re.fullmatch(r"ed25519 a_1 [A-Za-z0-9+/]{43}\n", text)
    assert text.split()[2] not in r.stdout + r.stderr
    [key] = read_signing_key_file(str(out))
    assert key.version == "a_1"
    r = cli("generate-keys", "--output", str(out))
    assert r.returncode == 1 and "already exists" in r.stderr
    assert out.read_text() == text

    # --config writes the configured signing_key_path only if it is missing.
    config = generate(tmp_path)
    key_path = tmp_path / "data" / "signing.key"
    key_path.unlink()
    r = cli("generate-keys", "--config", str(config))
    assert r.returncode == 0 and key_path.exists()
    before = key_path.read_text()
    r = cli("generate-keys", "--config", str(config))
    assert r.returncode == 0 and "already exists" in r.stdout
    assert key_path.read_text() == before


def test_invalid_config_exits_1_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: a.test\nlisteners:\n  - type: client\n    port: abc\nfoo: 1\n")
    for sub in ("run", "check-config"):
        r = cli(sub, "--config", str(bad))
        assert r.returncode == 1
        assert 'listeners[0].port: expected an integer, got "abc"' in r.stderr
        assert "foo: unknown option" in r.stderr
        assert "Traceback" not in r.stderr
    r = cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read the config file" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_reports_missing_files(tmp_path: Path) -> None:
    config = generate(tmp_path, "--self-signed-tls")
    (tmp_path / "data" / "signing.key").unlink()
    (tmp_path / "data" / "tls.key").unlink()
    r = cli("check-config", "--config", str(config))
    assert r.returncode == 1
    assert "2 problem(s)" in r.stderr
    assert "signing_key_path:" in r.stderr and "generate-keys" in r.stderr
    assert "listeners[1]: cannot load the TLS certificate" in r.stderr


def test_silent_database_fails_fast(tmp_path: Path) -> None:
    # A socket that accepts connections but never speaks: PostgreSQL "not answering".
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        config = generate(tmp_path, "--database-url", f"postgresql://postgres@127.0.0.1:{port}/x")
        text = config.read_text().replace("database:\n", "database:\n  connect_timeout: 1s\n")
        config.write_text(text)
        # The subprocess timeout is the hang bound: the connect timeout is 1 s
        # and start-up about 1 s, so 20 s fails only a node that hangs.
        r = cli("run", "--config", str(config), timeout=20)
    finally:
        silent.close()
    assert r.returncode == 1
    assert "Cannot start: Database postgresql://postgres@127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr


class LongPoll:
    """A /sync long-poll in a thread; ``result`` is (status, body) or the exception."""

    def __init__(self, client: str, token: str, since: str, timeout_ms: int) -> None:
        self.url = f"{client}/_matrix/client/v3/sync?since={since}&timeout={timeout_ms}"
        self.token = token
        self.result: tuple[int, bytes] | BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        req = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                self.result = (r.status, r.read())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self.result = e


def start_with_user(
    tmp_path: Path, node_factory: list[Node], extra_yaml: str = ""
) -> tuple[Node, str, str]:
    """A running node with user alice; returns (node, access token, a sync token)."""
    config = generate(tmp_path)
    config.write_text(config.read_text() + extra_yaml)
    r = cli("register-user", "--config", str(config), "alice", "correct horse battery")
    assert r.returncode == 0, r.stderr
    node = Node(config)
    node_factory.append(node)
    node.wait_healthy()
    client = node.urls["client"]
    login = json.dumps(
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "correct horse battery",
        }
    ).encode()
    status, body = request(client + "/_matrix/client/v3/login", method="POST", data=login)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    req = urllib.request.Request(
        client + "/_matrix/client/v3/sync", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        since = json.loads(r.read())["next_batch"]
    return node, token, since


def poll_in_flight(node: Node, token: str, since: str, timeout_ms: int) -> LongPoll:
    """Start a long-poll, and make sure the node has taken it before returning.

    A second request sent after it on another connection is answered only
    once the event loop has read the first one, which has nothing to answer
    before its timeout.
    """
    poll = LongPoll(node.urls["client"], token, since, timeout_ms)
    status, _ = request(node.urls["client"] + "/health")
    assert status == 200
    assert poll.result is None, poll.result
    return poll


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_in_flight_request_completes_on_shutdown(
    tmp_path: Path, node_factory: list[Node], sig: signal.Signals
) -> None:
    node, token, since = start_with_user(tmp_path, node_factory)
    poll = poll_in_flight(node, token, since, timeout_ms=2000)
    node.proc.send_signal(sig)
    assert node.proc.wait(timeout=DEADLINE_S) == 0
    poll.thread.join(timeout=DEADLINE_S)
    assert isinstance(poll.result, tuple), poll.result
    status, body = poll.result
    assert status == 200
    assert "next_batch" in json.loads(body)
    log = node.log
    assert f"Received {sig.name}: shutting down" in log
    assert "Shutdown complete" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_shutdown_timeout_cuts_off_longer_requests(
    tmp_path: Path, node_factory: list[Node]
) -> None:
    node, token, since = start_with_user(tmp_path, node_factory, "shutdown_timeout: 1s\n")
    # The long-poll would run 60 s; the wait below lasts at most DEADLINE_S
    # (20 s) for the exit, so a node that waited for it fails here.
    poll = poll_in_flight(node, token, since, timeout_ms=60_000)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=DEADLINE_S) == 0
    poll.thread.join(timeout=DEADLINE_S)
    assert not poll.thread.is_alive()
    # Cut off: the client sees the connection close or an error status, never a 200.
    assert not (isinstance(poll.result, tuple) and poll.result[0] == 200), poll.result
    assert "Shutdown complete" in node.log


@pytest.mark.slow
def test_logging_config_is_applied(tmp_path: Path, node_factory: list[Node]) -> None:
    config = generate(tmp_path)
    config.write_text(
        config.read_text()
        + "logging:\n"
        + '  format: "CUSTOM|%(levelname)s|%(name)s|%(message)s"\n'
        + "  level: WARNING\n"
        + "  loggers:\n"
        + "    homeserver.server: INFO\n"
        + "    homeserver.run: INFO\n"
        + "    homeserver.access: WARNING\n"
    )
    node = Node(config)
    node_factory.append(node)
    node.wait_healthy()
    status, _ = request(node.urls["client"] + "/_matrix/client/versions")
    assert status == 200
    assert node.stop() == 0
    lines = [line for line in node.lines if line.strip()]
    assert lines, node.log
    # format: every line is ours.
    assert all(line.startswith("CUSTOM|") for line in lines), node.log
    # loggers: INFO from the two raised loggers; the access log is silenced.
    assert any(line.startswith("CUSTOM|INFO|homeserver.server|") for line in lines)
    assert any("CUSTOM|INFO|homeserver.run|Received SIGTERM" in line for line in lines)
    assert "/_matrix/client/versions" not in node.log
    # level: no other logger logs below WARNING.
    for line in lines:
        _, level, name, _ = line.split("|", 3)
        if level in ("DEBUG", "INFO"):
            assert name in ("homeserver.server", "homeserver.run"), line
