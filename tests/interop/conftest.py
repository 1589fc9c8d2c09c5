"""Fixtures for the interop tests: a real Synapse next to real Concord nodes.

``synapse`` is session-scoped: one Synapse serves every interop test, and
tests create their own users and rooms on it. It is installed on first use
into a cached venv (see :mod:`tests.interop.synapse`); if that install fails,
for instance because no package registry answers, the tests FAIL and say so.
They are never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.server import HomeServer
from tests.interop.concord import ConcordFactory, start_concord_node
from tests.interop.synapse import (
    SYNAPSE_VERSION,
    SynapseClient,
    SynapseError,
    SynapseServer,
    ensure_synapse_venv,
    start_synapse,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop: runs against a real Synapse (installed into a cached venv); "
        "part of make test, never skipped",
    )


@pytest.fixture(scope="session")
def synapse_python() -> Path:
    """The ``python`` of a venv holding ``matrix-synapse==SYNAPSE_VERSION``."""
    try:
        return ensure_synapse_venv(SYNAPSE_VERSION)
    except SynapseError as e:
        pytest.fail(
            f"Cannot install Synapse {SYNAPSE_VERSION} for the interop tests: {e}\n"
            "The interop tests need PyPI (or a venv at $CONCORD_SYNAPSE_VENV); "
            "they fail rather than skip. See docs/development/interop.md.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def synapse(
    synapse_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SynapseServer]:
    """A running Synapse named ``127.0.0.1:PORT``, stopped at the end of the session."""
    workdir = tmp_path_factory.mktemp("synapse")
    try:
        server = start_synapse(synapse_python, workdir)
    except SynapseError as e:
        pytest.fail(f"Synapse did not start: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def synapse_client(synapse: SynapseServer) -> AsyncIterator[SynapseClient]:
    """A Client-Server API client for ``synapse`` on this test's event loop."""
    async with synapse.client() as client:
        yield client


@pytest.fixture
async def concord_nodes(tmp_path: Path) -> AsyncIterator[ConcordFactory]:
    """Start Concord nodes named ``127.0.0.1:PORT`` (TLS federation); all stopped after."""
    started: list[HomeServer] = []

    async def start(name: str = "concord", **kwargs: Any) -> HomeServer:
        hs = await start_concord_node(tmp_path / name, **kwargs)
        started.append(hs)
        return hs

    try:
        yield start
    finally:
        for hs in reversed(started):
            await hs.stop()
