"""createRoom happy paths (spec client-server "Creation"): the
trusted_private_chat preset, a power_level_content_override, the default
room version (12 unless configured), and the ``/versions`` body."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.rest.client.versions import SUPPORTED_VERSIONS
from tests.client.conftest import Client, Node


async def state(c: Client, room: str, etype: str, key: str = "") -> Any:
    return await c.ok("GET", f"/rooms/{room}/state/{etype}/{key}")


@pytest.mark.parametrize("version", ["11", "12"])
async def test_trusted_private_chat(node: Node, version: str) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    room = await alice.create_room(preset="trusted_private_chat", invite=[bob.user_id],
                                   room_version=version, is_direct=True)
    assert await state(alice, room, "m.room.join_rules") == {"join_rule": "invite"}
    assert await state(alice, room, "m.room.history_visibility") == {
        "history_visibility": "shared"}
    assert await state(alice, room, "m.room.guest_access") == {"guest_access": "can_join"}
    pl = await state(alice, room, "m.room.power_levels")
    # Invitees are admins like the creator; v12 creators hold their power
    # through the create event instead of the users map.
    expected = {bob.user_id: 100} | ({} if version == "12" else {alice.user_id: 100})
    assert pl["users"] == expected
    invite = await state(alice, room, "m.room.member", bob.user_id)
    assert invite["membership"] == "invite" and invite["is_direct"] is True
    # Bob accepts and, as an admin, may change the name.
    await bob.ok("POST", f"/join/{room}")
    await bob.ok("PUT", f"/rooms/{room}/state/m.room.name", {"name": "ours"})
    assert await state(alice, room, "m.room.name") == {"name": "ours"}


async def test_power_level_content_override(node: Node) -> None:
    alice, bob = await node.user("alice"), await node.user("bob")
    room = await alice.create_room(preset="public_chat", power_level_content_override={
        "users_default": 5, "state_default": 60, "events": {"m.room.topic": 5},
        "users": {bob.user_id: 50},
    })
    pl = await state(alice, room, "m.room.power_levels")
    assert (pl["users_default"], pl["state_default"]) == (5, 60)
    assert pl["events"] == {"m.room.topic": 5}  # replaced, as a top-level key is
    assert pl["users"] == {bob.user_id: 50}
    assert pl["ban"] == 50 and pl["events_default"] == 0  # the preset's defaults stay
    await bob.ok("POST", f"/join/{room}")
    # Topic is open to anyone (5), the name needs state_default (60) which bob lacks.
    await bob.ok("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "t"})
    status, got = await bob.call("PUT", f"/rooms/{room}/state/m.room.name", {"name": "n"})
    assert (status, got["errcode"]) == (403, "M_FORBIDDEN"), got


async def test_default_room_version_is_12(node: Node) -> None:
    alice = await node.user("alice")
    room = await alice.create_room()
    assert (await state(alice, room, "m.room.create"))["room_version"] == "12"
    caps = await alice.ok("GET", "/capabilities")
    assert caps["capabilities"]["m.room_versions"]["default"] == "12"


async def test_topic_content_block(node: Node) -> None:
    alice = await node.user("alice")
    room = await alice.create_room(topic="Tomatoes & compost")
    assert await state(alice, room, "m.room.topic") == {
        "topic": "Tomatoes & compost",
        "m.topic": {"m.text": [{"body": "Tomatoes & compost", "mimetype": "text/plain"}]},
    }


async def test_versions_body(node: Node) -> None:
    async with node.session.get(node.base + "/_matrix/client/versions") as r:
        assert r.status == 200
        body = await r.json()
    assert body == {"versions": [f"v1.{n}" for n in range(1, 13)], "unstable_features": {}}
    assert tuple(body["versions"]) == SUPPORTED_VERSIONS
