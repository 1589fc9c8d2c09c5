"""The pytest face, used as another project would: the installed ``concord``
plugin in a fresh pytest run in its own directory, plus the fixtures here."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from concord_harness import Federation, Node

EXTERNAL_TEST = """
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
"""


async def test_plugin_is_installed_for_other_projects(tmp_path: Path) -> None:
    # A project of its own: nothing of Concord's test set-up, only the
    # installed entry point brings the fixtures in.
    (tmp_path / "test_external.py").write_text(EXTERNAL_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "2 passed" in text


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
