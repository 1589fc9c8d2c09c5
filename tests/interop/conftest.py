"""Fixtures for the interop tests: a real Synapse next to real Concord nodes.

``synapse`` is session-scoped: one Synapse serves every interop test, and
tests create their own users and rooms on it. It is installed on first use
into a cached venv (see :mod:`tests.interop.synapse`); if that install fails,
for instance because no package registry answers, the tests FAIL and say so.
They are never skipped.

``concord_nodes`` is parametrised over both of our storage engines for the
federation scenarios (:data:`BOTH_ENGINE_MODULES`): each such test runs once
with SQLite nodes and once with PostgreSQL nodes, each node in a throwaway
database of its own. The other interop tests run on SQLite nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.server import HomeServer
from tests.conftest import ENGINES, create_postgres_database, drop_postgres_database
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


#: Test modules whose Concord nodes run once per storage engine: the federation
#: scenarios of the issue (joins, messages, invites, leave, backfill). The
#: other interop modules check protocol details that do not depend on the
#: engine and run on SQLite only, which keeps tests/interop within its time budget.
BOTH_ENGINE_MODULES = frozenset({"tests.interop.test_federation_with_synapse"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "concord_engine_url" in metafunc.fixturenames:
        both = metafunc.module.__name__ in BOTH_ENGINE_MODULES
        metafunc.parametrize(
            "concord_engine_url", ENGINES if both else ["sqlite"], indirect=True
        )


@pytest.fixture
def concord_engine_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` for SQLite nodes, else the ``postgres_url`` database.

    Parametrised by :func:`pytest_generate_tests`. A plain (not async)
    fixture: ``getfixturevalue`` of the async ``postgres_url`` cannot run
    inside a running event loop.
    """
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def concord_nodes(
    concord_engine_url: str | None, tmp_path: Path
) -> AsyncIterator[ConcordFactory]:
    """Start Concord nodes named ``127.0.0.1:PORT`` (TLS federation); all stopped after.

    Runs the test once per storage engine (``concord_engine_url``). On
    ``postgres`` the first node gets the ``postgres_url`` database and every
    further node a throwaway database of its own, dropped after the test.
    """
    engine = "sqlite" if concord_engine_url is None else "postgres"
    first_url = concord_engine_url
    extra_databases: list[str] = []
    started: list[HomeServer] = []

    async def database_url() -> str | None:
        nonlocal first_url
        if engine == "sqlite":
            return None
        if first_url is not None:
            url, first_url = first_url, None
            return url
        url = await create_postgres_database()
        extra_databases.append(url)
        return url

    async def start(name: str = "concord", **kwargs: Any) -> HomeServer:
        if "database_url" not in kwargs:
            kwargs["database_url"] = await database_url()
        hs = await start_concord_node(tmp_path / name, **kwargs)
        started.append(hs)
        return hs

    try:
        yield start
    finally:
        for hs in reversed(started):
            await hs.stop()
        for url in extra_databases:
            await drop_postgres_database(url)
