"""docker/: no Docker engine runs here, so check that the image, the compose file
and the entrypoint agree with the CLI and the config they drive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from homeserver.cli import build_parser
from homeserver.cli.run import run
from homeserver.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def dockerfile() -> dict[str, list[str]]:
    """Instructions of docker/Dockerfile (continuations joined), by keyword."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.setdefault(keyword.upper(), []).append(rest.strip())
    return out


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def run_entrypoint(
    tmp_path: Path, env: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CONCORD_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *argv],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_image_command_is_a_valid_run_invocation() -> None:
    df = dockerfile()
    [cmd] = df["CMD"]
    argv = exec_form(cmd)
    assert argv[0] == "homeserver"
    args = build_parser().parse_args(argv[1:])
    assert args.func is run
    [volume] = exec_form(df["VOLUME"][0])
    assert Path(args.config).parent == Path(volume) == Path("/data")
    assert "CONCORD_DATA_DIR=/data" in " ".join(df["ENV"])
    [entrypoint] = df["ENTRYPOINT"]
    assert exec_form(entrypoint) == ["/usr/local/bin/concord-entrypoint"]
    assert any("docker/entrypoint.sh /usr/local/bin/concord-entrypoint" in c for c in df["COPY"])


def test_image_runs_as_non_root_with_healthcheck_on_the_client_port() -> None:
    df = dockerfile()
    assert df["FROM"][0].startswith("python:3.11-slim")
    assert df["USER"] == ["concord"]
    defaults = build_parser().parse_args(
        ["generate-config", "--server-name", "x", "--data-dir", "/data", "--output", "/o"]
    )
    assert sorted(int(p) for p in df["EXPOSE"][0].split()) == sorted(
        [defaults.client_port, defaults.federation_port]
    )
    [health] = df["HEALTHCHECK"]
    assert f"http://127.0.0.1:{defaults.client_port}/health" in health


def test_compose_wires_concord_to_postgres() -> None:
    services = compose()["services"]
    concord, postgres = services["concord"], services["postgres"]
    assert concord["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / concord["build"]["context"] / concord["build"]["dockerfile"]).is_file()
    assert concord["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert postgres["image"].startswith("postgres:15")
    ports = sorted(int(p.split(":")[1]) for p in concord["ports"])
    assert ports == [8008, 8448]
    assert any(v.endswith(":/data") for v in concord["volumes"])
    url = concord["environment"]["CONCORD_DATABASE_URL"]
    # Compose turns $$ into $, leaving ${POSTGRES_PASSWORD} for the config loader.
    assert url == "postgresql://concord:$${POSTGRES_PASSWORD}@postgres:5432/concord"
    assert postgres["environment"]["POSTGRES_USER"] == "concord"
    assert postgres["environment"]["POSTGRES_DB"] == "concord"


def test_entrypoint_generates_a_config_matching_compose(tmp_path: Path) -> None:
    env = compose()["services"]["concord"]["environment"]
    url = env["CONCORD_DATABASE_URL"].replace("$$", "$")
    config = tmp_path / "data" / "homeserver.yaml"
    r = run_entrypoint(
        tmp_path,
        {"CONCORD_SERVER_NAME": "chat.example", "CONCORD_DATABASE_URL": url,
         "POSTGRES_PASSWORD": "pw"},
        "homeserver", "check-config", "--config", str(config),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "${POSTGRES_PASSWORD}" in config.read_text()  # the secret is not in the file
    cfg = load_config(str(config), env={"POSTGRES_PASSWORD": "pw"})
    assert cfg.database.url == "postgresql://concord:pw@postgres:5432/concord"
    published = sorted(int(p.split(":")[1]) for p in compose()["services"]["concord"]["ports"])
    assert sorted(li.port for li in cfg.listeners) == published
    assert all(li.bind_addresses == ("0.0.0.0",) for li in cfg.listeners)

    # Second start: the existing config is kept, the command runs as given.
    before = config.read_text()
    r = run_entrypoint(tmp_path, {"CONCORD_SERVER_NAME": "other.example"}, "true")
    assert r.returncode == 0, r.stderr
    assert config.read_text() == before


def test_entrypoint_without_server_name_explains(tmp_path: Path) -> None:
    r = run_entrypoint(tmp_path, {}, "true")
    assert r.returncode == 1
    assert "set CONCORD_SERVER_NAME" in r.stderr
    assert not (tmp_path / "data" / "homeserver.yaml").exists()
