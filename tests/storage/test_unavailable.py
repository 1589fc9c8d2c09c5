"""A database that does not answer fails fast and clearly, never hangs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.database import Database
from storage.errors import DatabaseUnavailable

CONNECT_TIMEOUT = 1.0
# Generous: the bound only catches a hang, it does not time the failure.
HANG_BOUND = CONNECT_TIMEOUT + 10.0


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback listener that never accepts nor answers: the TCP handshake
    completes through the backlog, then nothing is ever said."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


async def open_bounded(url: str) -> Database:
    return await asyncio.wait_for(
        Database.open(url, connect_timeout=CONNECT_TIMEOUT), timeout=HANG_BOUND
    )


async def test_postgres_refusing_connections(closed_port: int) -> None:
    url = f"postgresql://concord:s3cret@127.0.0.1:{closed_port}/concord"
    with pytest.raises(DatabaseUnavailable) as info:
        await open_bounded(url)
    message = str(info.value)
    assert f"127.0.0.1:{closed_port}" in message
    assert "refused" in message
    assert "s3cret" not in message and "concord:***@" in message
    assert info.value.timeout == CONNECT_TIMEOUT


async def test_postgres_that_never_answers(silent_port: int) -> None:
    url = f"postgresql://concord:s3cret@127.0.0.1:{silent_port}/concord"
    with pytest.raises(DatabaseUnavailable) as info:
        await open_bounded(url)
    message = str(info.value)
    assert f"127.0.0.1:{silent_port}" in message
    assert "no answer within 1 s" in message
    assert "s3cret" not in message


async def test_postgres_database_that_does_not_exist(postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/concord_no_such_database"
    with pytest.raises(DatabaseUnavailable, match="concord_no_such_database"):
        await open_bounded(missing)


async def test_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/no/such/directory/concord.db"
    with pytest.raises(DatabaseUnavailable, match="no/such/directory"):
        await open_bounded(url)


async def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite file, not even close" * 100)
    with pytest.raises(DatabaseUnavailable, match="garbage.db"):
        await open_bounded(f"sqlite://{path}")
