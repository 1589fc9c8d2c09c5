"""The library: nodes start on both engines and in both modes, links route
through the fault proxies, and the node controls (restart, kill, key
rotation, clock skew) do what they say."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import yaml

from concord_harness import Federation, Node
from concord_harness.nodes import PORT_RANGE
from federation.clock import RealClock
from homeserver.config import ConfigError, parse_config

DAY_MS = 86_400_000


async def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=False, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def health(node: Node) -> int | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(node.client_url + "/health") as r:
            return r.status
    except aiohttp.ClientError:
        return None


async def notary_keys(via: Node, of: Node) -> list[Any]:
    """``via`` fetches ``of``'s keys over federation (its real keyring and
    federation client, through the harness link) and serves them as a notary."""
    status, body = await get_json(f"{via.federation_url}/_matrix/key/v2/query/{of.server_name}")
    assert status == 200, body
    return list(body["server_keys"])


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_nodes_start_and_route_federation_through_their_link(engine: str) -> None:
    async with Federation(nodes=3, engine=engine) as fed:  # type: ignore[arg-type]
        a, b, c = fed.nodes
        assert len({a.server_name, b.server_name, c.server_name}) == 3
        for n in fed.nodes:
            assert n.server_name.startswith("127.0.0.1:")
            assert PORT_RANGE[0] <= n.federation_port < PORT_RANGE[1]
            assert await health(n) == 200
            assert n.hs.database.engine == engine
        raw = yaml.safe_load(a.config_path.read_text())
        assert raw["federation"]["verify_certificates"] is False
        assert raw["federation"]["destination_overrides"] == {
            b.server_name: fed.link(a, b).url,
            c.server_name: fed.link(a, c).url,
        }
        keys = await notary_keys(a, b)
        assert [k["server_name"] for k in keys] == [b.server_name]
        assert fed.link(a, b).stats["forwarded"] >= 1
        assert fed.link(a, c).stats.counts.total() == 0


async def test_partition_cuts_both_directions_and_heal_restores() -> None:
    async with Federation(nodes=2) as fed:
        a, b = fed.nodes
        fed.partition(a, b)
        for src, dst in ((a, b), (b, a)):
            with pytest.raises(Exception, match="disconnected|Disconnect|reset"):
                await src.hs.keys.client.get_json(dst.server_name, "/_matrix/key/v2/server")
            assert fed.link(src, dst).stats["partitioned"] >= 1
        fed.heal()
        body = await a.hs.keys.client.get_json(b.server_name, "/_matrix/key/v2/server")
        assert body["server_name"] == b.server_name
        # One direction only: a can still reach b while b cannot reach a.
        fed.link(b, a).partition()
        await a.hs.keys.client.get_json(b.server_name, "/_matrix/key/v2/server")
        with pytest.raises(Exception, match="disconnected|Disconnect|reset"):
            await b.hs.keys.client.get_json(a.server_name, "/_matrix/key/v2/server")


async def test_injected_status_reaches_the_node_client() -> None:
    async with Federation(nodes=2) as fed:
        a, b = fed.nodes
        fed.link(a, b).respond_with(503)
        with pytest.raises(Exception, match="503") as info:
            await a.hs.keys.client.get_json(b.server_name, "/_matrix/key/v2/server")
        assert getattr(info.value, "transient", None) is True


async def test_subprocess_nodes_on_both_engines_kill_and_restart() -> None:
    async with Federation(nodes=2, engine=["postgres", "sqlite"], mode="subprocess") as fed:
        a, b = fed.nodes
        assert a.process is not None and a.database_url.startswith("postgresql://")
        keys = await notary_keys(a, b)
        assert keys and keys[0]["server_name"] == b.server_name
        name, key_id = b.server_name, next(iter(keys[0]["verify_keys"]))
        await b.kill()
        assert not b.running and await health(b) is None
        await b.restart()
        assert b.running and await health(b) == 200 and b.server_name == name
        status, body = await get_json(f"{b.federation_url}/_matrix/key/v2/server")
        assert status == 200 and key_id in body["verify_keys"]
        with pytest.raises(NotImplementedError, match="inprocess"):
            b.skew_clock(60)


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
async def test_rotate_signing_key_on_the_running_node(mode: str) -> None:
    """``homeserver keys rotate``'s path, no restart: the new key is published
    at once, the old one under ``old_verify_keys``, and a peer verifies what
    the node signs afterwards."""
    async with Federation(nodes=2, mode=[mode, "inprocess"]) as fed:  # type: ignore[list-item]
        a, b = fed.nodes
        same = a.hs if mode == "inprocess" else a.process
        _, before = await get_json(f"{a.federation_url}/_matrix/key/v2/server")
        (old_id,) = before["verify_keys"]
        new_id = await a.rotate_signing_key()
        assert (a.hs if mode == "inprocess" else a.process) is same  # not restarted
        _, after = await get_json(f"{a.federation_url}/_matrix/key/v2/server")
        assert list(after["verify_keys"]) == [new_id] != [old_id]
        assert old_id in after["old_verify_keys"]
        alice, bob = await a.register_user("alice"), await b.register_user("bob")
        room = await fed.create_room(alice, bob)  # signed with the new key
        await alice.send_message(room, "after the rotation")
        await fed.converged(room, timeout=20)


async def test_skewed_clock_shows_in_the_key_validity() -> None:
    async with Federation(nodes=1) as fed:
        (a,) = fed.nodes
        a.skew_clock(3 * DAY_MS / 1000)
        _, body = await get_json(f"{a.federation_url}/_matrix/key/v2/server")
        assert body["valid_until_ts"] > RealClock().time_ms() + 3 * DAY_MS
        a.skew_clock(0)
        assert a.clock is not None and a.clock.offset_s == 0


async def test_restart_in_process_keeps_name_ports_and_data() -> None:
    async with Federation(nodes=1) as fed:
        (a,) = fed.nodes
        name, client_url = a.server_name, a.client_url
        db = a.database_url
        await a.restart()
        assert (a.server_name, a.client_url, a.database_url) == (name, client_url, db)
        assert await health(a) == 200


def test_destination_overrides_config_is_checked(tmp_path: Any) -> None:
    ok = parse_config(
        {
            "server_name": "a.test",
            "federation": {"destination_overrides": {"b.test:8448": "http://127.0.0.1:9"}},
        },
        base_dir=str(tmp_path),
        env={},
    )
    assert dict(ok.federation.destination_overrides) == {"b.test:8448": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match=r"destination_overrides\.b\.test: expected an http"):
        parse_config(
            {"server_name": "a.test", "federation": {"destination_overrides": {"b.test": "x"}}},
            base_dir=str(tmp_path),
            env={},
        )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        Federation(nodes=0)
    with pytest.raises(ValueError, match="expected one value or 2"):
        Federation(nodes=2, engine=["sqlite"])


async def test_users_of_every_tenant_register_and_federate() -> None:
    """A node with several tenants routes client requests by Host: users of its
    primary name and of an extra tenant both register, and the tenant
    federates with the other node through the proxies like any server."""
    async with Federation(nodes=2, tenants_per_node=2) as fed:
        a, b = fed.nodes
        alice = await a.register_user("alice")
        tina = await a.register_user("tina", tenant=a.tenants[1])
        bob = await b.register_user("bob")
        assert alice.user_id == f"@alice:{a.server_name}"
        assert tina.user_id == f"@tina:{a.tenants[1]}"
        room_id = await fed.create_room(bob, alice, tina)
        for user in (tina, alice, bob):
            await user.send_message(room_id, f"hello from {user.user_id}")
        snaps = await fed.converged(room_id, timeout=15)
        assert {s.server for s in snaps} == {a.server_name, a.tenants[1], b.server_name}
        with pytest.raises(ValueError, match="hosts"):
            await b.register_user("x", tenant=a.tenants[1])
