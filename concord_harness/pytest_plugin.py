"""pytest face of the harness, registered as the ``concord`` plugin (entry
point ``pytest11``), so it is active wherever ``concord-homeserver`` is
installed.

Fixtures:

``concord_federation``
    A factory: ``fed = await concord_federation(nodes=3, engine="postgres")``
    starts a :class:`~concord_harness.Federation` (any of its keyword
    arguments) and closes it after the test, latest first.
``concord_node``
    One started :class:`~concord_harness.Node` (a federation of one).

Defaults for both come, weakest first, from the command line
(``--concord-engine``, ``--concord-mode``), the ``concord_federation``
marker (``@pytest.mark.concord_federation(engine="postgres")``) and indirect
parametrisation (``@pytest.mark.parametrize("concord_federation",
[{"engine": "sqlite"}, {"engine": "postgres"}], indirect=True)``); keyword
arguments to the factory win over all of them.

The fixtures are async: they need pytest-asyncio (``asyncio_mode = "auto"``,
or ``@pytest.mark.asyncio`` on each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from concord_harness.federation import Federation
from concord_harness.nodes import Node

try:
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio the fixtures cannot run
    _async_fixture = pytest.fixture

__all__ = ["FederationFactory", "concord_federation", "concord_node"]

#: ``await factory(**federation_kwargs) -> Federation``
FederationFactory = Callable[..., Awaitable[Federation]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("concord", "Concord federation harness")
    group.addoption(
        "--concord-engine",
        choices=("sqlite", "postgres"),
        default=None,
        help="default database engine of harness nodes (default: sqlite)",
    )
    group.addoption(
        "--concord-mode",
        choices=("inprocess", "subprocess"),
        default=None,
        help="default mode of harness nodes (default: inprocess)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "concord_federation(**kwargs): Federation(...) keyword arguments for the "
        "concord_federation and concord_node fixtures",
    )


def _defaults(request: pytest.FixtureRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt, key in (("--concord-engine", "engine"), ("--concord-mode", "mode")):
        value = request.config.getoption(opt, default=None)
        if value is not None:
            out[key] = value
    marker = request.node.get_closest_marker("concord_federation")
    if marker is not None:
        if marker.args:
            raise TypeError("the concord_federation marker takes keyword arguments only")
        out.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        out.update(param)
    elif param is not None:
        raise TypeError(f"parametrise concord_federation with dicts, got {param!r}")
    return out


@_async_fixture  # type: ignore[untyped-decorator]
async def concord_federation(request: pytest.FixtureRequest) -> AsyncIterator[FederationFactory]:
    """Factory of started federations, closed after the test."""
    defaults = _defaults(request)
    started: list[Federation] = []

    async def factory(**kwargs: Any) -> Federation:
        fed = Federation(**{**defaults, **kwargs})
        await fed.start()
        started.append(fed)
        return fed

    try:
        yield factory
    finally:
        errors = []
        for fed in reversed(started):
            try:
                await fed.close()
            except Exception as e:  # close the others anyway
                errors.append(e)
        if errors:
            raise errors[0]


@_async_fixture  # type: ignore[untyped-decorator]
async def concord_node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """One started node (defaults as for ``concord_federation``; ``nodes`` is 1)."""
    kwargs = {**_defaults(request), "nodes": 1}
    async with Federation(**kwargs) as fed:
        yield fed.nodes[0]
