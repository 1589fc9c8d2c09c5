"""``homeserver migrate`` on SQLite: what it prints, how it fails."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from homeserver.cli import main
from storage.migrations import discover_migrations

LATEST = discover_migrations()[-1].label


def write_config(tmp_path: Path, url: str, connect_timeout: str = "5s") -> Path:
    path = tmp_path / "homeserver.yaml"
    path.write_text(
        "server_name: migrate.test\n"
        f"data_dir: {tmp_path}\n"
        "database:\n"
        f"  url: {url}\n"
        f"  connect_timeout: {connect_timeout}\n",
        encoding="utf-8",
    )
    return path


def run_main(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["migrate", "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_migrate_applies_then_is_up_to_date(tmp_path: Path) -> None:
    """End to end through the real command line, in a fresh process."""
    db_path = tmp_path / "h.db"
    config = write_config(tmp_path, f"sqlite://{db_path}")
    command = [sys.executable, "-m", "homeserver", "migrate", "--config", str(config)]

    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {m.label}" for m in discover_migrations()]

    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"up to date (latest migration {LATEST})"

    with sqlite3.connect(db_path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [m.version for m in discover_migrations()]


def test_database_too_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "h.db"
    config = write_config(tmp_path, f"sqlite://{db_path}")
    assert run_main(config, capsys)[0] == 0
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_ts) VALUES (9999, 'future', 0)"
        )
    code, out, err = run_main(config, capsys)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "9999" in err and "newer" in err
    assert "Traceback" not in err


def test_failing_migration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "h.db"
    # A table in the way of 0001_initial makes it fail.
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE node_info (unrelated TEXT)")
    code, out, err = run_main(write_config(tmp_path, f"sqlite://{db_path}"), capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "0001_initial.sql" in err and "rolled back" in err
    assert "Traceback" not in err
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (0,)


def test_sqlite_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path}/missing/dir/h.db"
    code, out, err = run_main(write_config(tmp_path, url), capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "unavailable" in err and "missing/dir" in err


def test_postgres_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://concord:s3cret@127.0.0.1:{port}/concord"
    code, out, err = run_main(write_config(tmp_path, url, connect_timeout="1s"), capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in err and "timeout 1 s" in err
    assert "s3cret" not in err


def test_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server_name: [not, a, name]\n", encoding="utf-8")
    code, out, err = run_main(config, capsys)
    assert code == 1
    assert "bad.yaml" in err and "server_name" in err
    assert "Traceback" not in err
