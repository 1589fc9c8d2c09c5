"""Fixtures: a Concord node and a crafted peer (:mod:`tests.federation_inbound.peer`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from federation.clock import FakeClock
from tests.federation_inbound.peer import (
    ALICE,
    NODE,
    PEER,
    PEER_USER,
    Node,
    NodeAndPeer,
    Peer,
    Setup,
    room_path,
)

__all__ = [
    "ALICE", "NODE", "PEER", "PEER_USER", "Node", "Peer", "Setup", "room_path",
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'node.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def setup_factory(
    tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Callable[[str], Awaitable[Setup]]]:
    nodes = NodeAndPeer(tmp_path, clock)
    yield nodes.start
    await nodes.close()


@pytest.fixture
async def setup(setup_factory: Callable[[str], Awaitable[Setup]], db_url: str) -> Setup:
    """Node and peer, once per storage engine."""
    return await setup_factory(db_url)


@pytest.fixture
async def sqlite_setup(
    setup_factory: Callable[[str], Awaitable[Setup]], tmp_path: Path
) -> Setup:
    """Node (SQLite only) and peer, for tests of request shapes."""
    return await setup_factory(f"sqlite://{tmp_path / 'node.db'}")
