"""The pytest face, used as another project would: the installed ``concord``
plugin in a fresh pytest run (pytester), plus the fixtures in this suite."""

from __future__ import annotations

import pytest

from concord_harness import Federation, Node

EXTERNAL_TEST = '''
import aiohttp
import pytest

pytestmark = pytest.mark.asyncio


@pytest.mark.concord_federation(nodes=2)
async def test_uses_the_factory(concord_federation):
    fed = await concord_federation()
    assert len(fed.nodes) == 2
    one = await concord_federation(nodes=1, engine="postgres")
    assert one.nodes[0].engine == "postgres"


async def test_uses_a_node(concord_node):
    async with aiohttp.ClientSession() as s:
        async with s.get(concord_node.client_url + "/health") as r:
            assert r.status == 200
'''


def test_plugin_is_installed_for_other_projects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_external=EXTERNAL_TEST)
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


@pytest.mark.concord_federation(nodes=2, tenants_per_node=1)
async def test_marker_sets_defaults(concord_federation: object) -> None:
    fed = await concord_federation()  # type: ignore[operator]
    assert isinstance(fed, Federation) and len(fed.nodes) == 2
    override = await concord_federation(nodes=1)  # type: ignore[operator]
    assert len(override.nodes) == 1


@pytest.mark.parametrize(
    "concord_federation", [{"engine": "sqlite"}, {"engine": "postgres"}], indirect=True
)
async def test_indirect_parametrisation(concord_federation: object) -> None:
    fed = await concord_federation(nodes=1)  # type: ignore[operator]
    assert fed.nodes[0].hs.database.engine == fed.nodes[0].engine


async def test_concord_node(concord_node: Node) -> None:
    assert concord_node.running and concord_node.server_name.startswith("127.0.0.1:")
