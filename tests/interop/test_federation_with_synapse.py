"""Concord and Synapse in one room, each through its own Client-Server API.

The scenarios of the federation issue, for room versions 10, 11 and 12: a
Synapse user joins a Concord room and a Concord user joins a Synapse room;
messages, room name and topic go both ways; invites both ways; leave; and
backfill of 200 messages. Every wait is a bounded ``/sync`` long-poll on the
receiving side, never a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from homeserver.server import HomeServer
from storage.stores.events import EventStore
from storage.stores.state import StateStore
from tests.interop.concord import ConcordFactory
from tests.interop.synapse import MatrixClient, SynapseClient, SynapseUser

pytestmark = pytest.mark.interop

VERSIONS = ["10", "11", "12"]

Event = dict[str, Any]


@dataclass
class Concord:
    hs: HomeServer
    client: MatrixClient

    @property
    def server_name(self) -> str:
        return self.hs.server_name


@pytest.fixture
async def concord(concord_nodes: ConcordFactory) -> AsyncIterator[Concord]:
    """A Concord node with open registration and a client for its client listener."""
    hs = await concord_nodes(extra={"enable_registration": True})
    async with aiohttp.ClientSession() as session:
        yield Concord(hs, MatrixClient(hs.base_url("client"), session))


def _room_events(resp: dict[str, Any], room_id: str) -> list[Event]:
    rooms = resp.get("rooms", {})
    out: list[Event] = []
    joined = rooms.get("join", {}).get(room_id, {})
    out += joined.get("state", {}).get("events", [])
    out += joined.get("timeline", {}).get("events", [])
    out += rooms.get("invite", {}).get(room_id, {}).get("invite_state", {}).get("events", [])
    out += rooms.get("leave", {}).get(room_id, {}).get("timeline", {}).get("events", [])
    return out


async def wait_for_event(
    client: MatrixClient,
    user: SynapseUser,
    room_id: str,
    predicate: Callable[[Event], bool],
    *,
    timeout_s: float = 20.0,
) -> Event:
    """The first event in ``room_id`` that ``user``'s ``/sync`` shows matching ``predicate``."""
    found: list[Event] = []

    def match(resp: dict[str, Any]) -> bool:
        found[:] = [e for e in _room_events(resp, room_id) if predicate(e)]
        return bool(found)

    await client.wait_for_sync(user, match, timeout_s=timeout_s)
    return found[0]


def is_message(body: str) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == "m.room.message" and e["content"].get("body") == body


def is_member(user_id: str, membership: str) -> Callable[[Event], bool]:
    return lambda e: (
        e.get("type") == "m.room.member"
        and e.get("state_key") == user_id
        and e["content"].get("membership") == membership
    )


def is_state(event_type: str, key: str, value: str) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == event_type and e["content"].get(key) == value


async def give_power(
    home: MatrixClient,
    admin: SynapseUser,
    guest: MatrixClient,
    guest_user: SynapseUser,
    room_id: str,
) -> None:
    """Let ``guest_user`` set the name and topic (50 with the public_chat defaults),
    and wait until the guest's server has the change too."""
    levels = await home.state_event(admin, room_id, "m.room.power_levels")
    levels.setdefault("users", {})[guest_user.user_id] = 50
    await home.send_state(admin, room_id, "m.room.power_levels", levels)
    await wait_for_event(
        guest,
        guest_user,
        room_id,
        lambda e: (
            e.get("type") == "m.room.power_levels"
            and e["content"].get("users", {}).get(guest_user.user_id) == 50
        ),
    )


async def exchange_messages_name_and_topic(
    home: MatrixClient,
    home_user: SynapseUser,
    guest: MatrixClient,
    guest_user: SynapseUser,
    room_id: str,
    tag: str,
) -> None:
    """Messages, name and topic from each side are seen by the other."""
    await home.send_message(home_user, room_id, f"{tag}: from the home server")
    await wait_for_event(guest, guest_user, room_id, is_message(f"{tag}: from the home server"))
    await guest.send_message(guest_user, room_id, f"{tag}: from the guest")
    await wait_for_event(home, home_user, room_id, is_message(f"{tag}: from the guest"))

    await give_power(home, home_user, guest, guest_user, room_id)
    await guest.send_state(guest_user, room_id, "m.room.name", {"name": f"{tag} named by guest"})
    await wait_for_event(
        home, home_user, room_id, is_state("m.room.name", "name", f"{tag} named by guest")
    )
    await home.send_state(home_user, room_id, "m.room.topic", {"topic": f"{tag} topic by home"})
    await wait_for_event(
        guest, guest_user, room_id, is_state("m.room.topic", "topic", f"{tag} topic by home")
    )
    # Both end in the same state for these keys.
    for client, user in ((home, home_user), (guest, guest_user)):
        assert await client.state_event(user, room_id, "m.room.name") == {
            "name": f"{tag} named by guest"
        }
        assert await client.state_event(user, room_id, "m.room.topic") == {
            "topic": f"{tag} topic by home"
        }


@pytest.mark.parametrize("room_version", VERSIONS)
async def test_synapse_user_joins_a_concord_room(
    synapse_client: SynapseClient, concord: Concord, room_version: str
) -> None:
    carol = await concord.client.register_open()
    room_id = await concord.client.create_room(
        carol, room_version=room_version, alias_localpart=f"lobby{room_version}", name="Lobby"
    )
    await concord.client.send_message(carol, room_id, "before the join")
    alice = await synapse_client.register()

    joined = await synapse_client.join(alice, f"#lobby{room_version}:{concord.server_name}")
    assert joined == room_id
    await wait_for_event(concord.client, carol, room_id, is_member(alice.user_id, "join"))
    create = await synapse_client.state_event(alice, room_id, "m.room.create")
    assert create.get("room_version", "1") == room_version
    history = await synapse_client.all_messages(alice, room_id)
    assert "before the join" in [e["content"].get("body") for e in history]

    await exchange_messages_name_and_topic(
        concord.client, carol, synapse_client, alice, room_id, f"v{room_version}"
    )


@pytest.mark.parametrize("room_version", VERSIONS)
async def test_concord_user_joins_a_synapse_room(
    synapse_client: SynapseClient, concord: Concord, room_version: str
) -> None:
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(alice, room_version=room_version, name="Garden")
    await synapse_client.send_message(alice, room_id, "before the join")
    carol = await concord.client.register_open()

    # By room ID: v12 IDs name no server, so the server comes from via.
    joined = await concord.client.join(carol, room_id, via=[synapse_client.server.server_name])
    assert joined == room_id
    await wait_for_event(synapse_client, alice, room_id, is_member(carol.user_id, "join"))
    create = await concord.client.state_event(carol, room_id, "m.room.create")
    assert create.get("room_version", "1") == room_version
    history = await concord.client.all_messages(carol, room_id)
    assert "before the join" in [e["content"].get("body") for e in history]

    await exchange_messages_name_and_topic(
        synapse_client, alice, concord.client, carol, room_id, f"v{room_version}"
    )


@pytest.mark.parametrize("room_version", VERSIONS)
async def test_concord_invites_a_synapse_user_who_joins_then_leaves(
    synapse_client: SynapseClient, concord: Concord, room_version: str
) -> None:
    alice = await synapse_client.register()
    carol = await concord.client.register_open()
    room_id = await concord.client.create_room(
        carol, room_version=room_version, preset="private_chat"
    )
    await concord.client.invite(carol, room_id, alice.user_id)
    invite = await wait_for_event(
        synapse_client, alice, room_id, is_member(alice.user_id, "invite")
    )
    assert invite["sender"] == carol.user_id
    # private_chat: only the invite lets her in.
    await synapse_client.join(alice, room_id, via=[concord.server_name])
    await wait_for_event(concord.client, carol, room_id, is_member(alice.user_id, "join"))
    await synapse_client.leave(alice, room_id)
    await wait_for_event(concord.client, carol, room_id, is_member(alice.user_id, "leave"))


@pytest.mark.parametrize("room_version", VERSIONS)
async def test_synapse_invites_a_concord_user_who_joins_then_leaves(
    synapse_client: SynapseClient, concord: Concord, room_version: str
) -> None:
    alice = await synapse_client.register()
    carol = await concord.client.register_open()
    room_id = await synapse_client.create_room(
        alice, room_version=room_version, preset="private_chat"
    )
    # Synapse answers only after Concord countersigned the invite (invite v2).
    await synapse_client.invite(alice, room_id, carol.user_id)
    await concord.client.join(carol, room_id, via=[synapse_client.server.server_name])
    await wait_for_event(synapse_client, alice, room_id, is_member(carol.user_id, "join"))
    await concord.client.leave(carol, room_id)
    await wait_for_event(synapse_client, alice, room_id, is_member(carol.user_id, "leave"))


async def test_concord_sync_lists_an_invite_from_synapse(
    synapse_client: SynapseClient, concord: Concord
) -> None:
    alice = await synapse_client.register()
    carol = await concord.client.register_open()
    room_id = await synapse_client.create_room(alice, room_version="11", preset="private_chat")
    await synapse_client.invite(alice, room_id, carol.user_id)
    # Synapse answered the invite only after Concord stored it, so an initial
    # sync must already list it: no waiting needed.
    resp = await concord.client.sync(carol)
    invite_state = resp["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert any(is_member(carol.user_id, "invite")(e) for e in invite_state)


BACKFILL_MESSAGES = 200


async def send_many(client: MatrixClient, user: SynapseUser, room_id: str, n: int) -> list[str]:
    """``n`` messages one after the other, so the history is one line of events
    (``send_forked`` sends them concurrently)."""
    return [await client.send_message(user, room_id, f"old {i}") for i in range(n)]


def message_ids(events: list[Event]) -> list[str]:
    return [e["event_id"] for e in events if e["type"] == "m.room.message"]


async def test_synapse_backfills_200_messages_from_concord(
    synapse_client: SynapseClient, concord: Concord
) -> None:
    carol = await concord.client.register_open()
    room_id = await concord.client.create_room(carol, room_version="11", alias_localpart="history")
    sent = await send_many(concord.client, carol, room_id, BACKFILL_MESSAGES)
    alice = await synapse_client.register()
    await synapse_client.join(alice, f"#history:{concord.server_name}")

    # Paging back makes Synapse backfill from Concord.
    theirs = message_ids(await synapse_client.all_messages(alice, room_id))
    assert theirs == sent
    assert message_ids(await concord.client.all_messages(carol, room_id)) == sent


async def test_concord_backfills_200_messages_from_synapse(
    synapse_client: SynapseClient, concord: Concord
) -> None:
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(alice, room_version="11")
    sent = await send_many(synapse_client, alice, room_id, BACKFILL_MESSAGES)
    carol = await concord.client.register_open()
    await concord.client.join(carol, room_id, via=[synapse_client.server.server_name])

    ours = message_ids(await concord.client.all_messages(carol, room_id))
    assert ours == sent


FORK_BATCH = 20


async def send_forked(
    client: MatrixClient, user: SynapseUser, room_id: str, n: int
) -> list[str]:
    """``n`` messages in concurrent batches of ``FORK_BATCH``: Synapse creates
    several at once on the same prev_events, so its graph forks (how wide
    varies from run to run)."""
    sent: list[str] = []
    for start in range(0, n, FORK_BATCH):
        sent += await asyncio.gather(*(
            client.send_message(user, room_id, f"forked {i}")
            for i in range(start, min(n, start + FORK_BATCH))
        ))
    return sent


async def forward_extremities(
    client: SynapseClient, admin: SynapseUser, room_id: str
) -> list[str]:
    """Synapse's forward extremities of the room (admin API)."""
    result = await client.request(
        "GET", f"/_synapse/admin/v1/rooms/{quote(room_id, safe='')}/forward_extremities",
        user=admin,
    )
    return [e["event_id"] for e in result["results"]]


async def close_forks(client: SynapseClient, admin: SynapseUser, room_id: str) -> list[str]:
    """Messages one at a time until Synapse's graph has one forward extremity.

    Synapse gives a new event at most 10 prev_events (its deepest forward
    extremities), so after concurrent sends some branches may end in events
    nothing refers to; a joining server cannot learn of those through its
    join's ancestors (they reach it only when a later event refers to them).
    Each message here refers to up to 10 of them, until one is left.
    """
    sent: list[str] = []
    for i in range(60):
        if len(await forward_extremities(client, admin, room_id)) <= 1:
            return sent
        sent.append(await client.send_message(admin, room_id, f"closing {i}"))
    raise AssertionError("Synapse's forward extremities never came down to one")


async def test_concord_backfills_a_forked_history_from_synapse(
    synapse_client: SynapseClient, concord: Concord
) -> None:
    """Whatever the shape of Synapse's forks: a Concord user who joins and
    pages back sees every message exactly once, each after its prev events."""
    alice = await synapse_client.register(admin=True)
    room_id = await synapse_client.create_room(alice, room_version="11")
    sent = await send_forked(synapse_client, alice, room_id, BACKFILL_MESSAGES)
    sent += await close_forks(synapse_client, alice, room_id)
    carol = await concord.client.register_open()
    await concord.client.join(carol, room_id, via=[synapse_client.server.server_name])

    ours = message_ids(await concord.client.all_messages(carol, room_id))
    assert len(ours) == len(set(ours))
    missing = set(sent) - set(ours)
    assert not missing, f"{len(missing)} of {len(sent)} messages never shown"
    assert set(ours) == set(sent)
    # History order: every event after the events it refers to (prev_events),
    # so depths never decrease.
    events = EventStore(concord.hs.database, StateStore(concord.hs.database))
    stored = await events.get_events(concord.server_name, ours)
    position = {eid: n for n, eid in enumerate(ours)}
    depths = [stored[eid].depth for eid in ours]
    assert depths == sorted(depths)
    for eid in ours:
        for prev in stored[eid].prev_event_ids:
            assert position.get(prev, -1) < position[eid]
