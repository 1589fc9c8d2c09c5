"""A quota below its minimum (config.py's ``quotas`` bounds: an event rate of
at least 1) is refused by every way of creating a tenant, with nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from homeserver.server import HomeServer
from homeserver.tenants import Quotas, TenantError
from tests.tenants.conftest import PRIMARY, Api, NodeFn
from tests.tenants.test_cli import cli, write_config

ApiFor = Callable[[HomeServer, str | None], Api]
TENANTS = "/_concord/admin/v1/tenants"


async def test_zero_event_rate_refused_everywhere(
    node: NodeFn, api_for: ApiFor, tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    code, _, err = await cli("tenant", "create", "--config", config, "c.test",
                             "--max-events-per-minute", "0")  # fmt: skip
    assert code != 0
    assert "max_events_per_minute must be an integer of at least 1" in err

    hs = await node()
    a = api_for(hs, PRIMARY)
    root = (await a.admin_register("root", "pw-root-1", admin=True))["access_token"]
    for quotas, key, least in [({"max_events_per_minute": 0}, "max_events_per_minute", 1),
                               ({"max_events_per_minute": -3}, "max_events_per_minute", 1),
                               ({"max_rooms": -1}, "max_rooms", 0)]:
        status, got = await a.call("POST", TENANTS, {"server_name": "c.test", "quotas": quotas},
                                   token=root)
        assert (status, got["errcode"]) == (400, "M_INVALID_PARAM"), got
        assert f"quotas.{key} must be an integer of at least {least}" in got["error"]
    with pytest.raises(TenantError, match="max_events_per_minute must be an integer of at"):
        await hs.tenants.create("c.test", quotas=Quotas(max_events_per_minute=0))
    assert hs.tenants.get("c.test") is None
    assert await hs.database.fetchval(
        "SELECT COUNT(*) FROM tenants WHERE server_name = 'c.test'") == 0
    assert not (tmp_path / "tenants" / "c.test.signing.key").exists()

    # The smallest allowed rates work: 0 rooms, 1 event a minute.
    status, got = await a.call("POST", TENANTS, {
        "server_name": "c.test", "quotas": {"max_rooms": 0, "max_events_per_minute": 1}},
        token=root)
    assert status == 200, got
    assert got["quotas"] == {"max_rooms": 0, "max_events_per_minute": 1}
