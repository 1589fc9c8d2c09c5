"""Outbound: nothing is sent to a server outside the trust domain: no
transaction, no join, no invite, no query, no key request."""

from __future__ import annotations

import pytest

from federation.errors import MatrixError
from federation.room_versions import ROOM_V11
from federation.transport.client import FederationHttpError
from homeserver.trust_domain import UntrustedDestinationError
from storage.stores.outbox import OutboxStore
from tests.federation_outbound.nodes import settle
from tests.trust.conftest import RecordingPeer, StartFn

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"


async def outbox_rows(node: object, destination: str) -> int:
    db = node.hs.database  # type: ignore[attr-defined]
    return int(await db.fetchval(
        "SELECT COUNT(*) FROM federation_outbox WHERE destination = $1", destination))


async def test_events_for_a_server_removed_from_the_domain_are_dead_lettered_unsent(
    nodes: StartFn,
) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    c = await nodes("c.test")
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await c.remote_rooms.remote_join("c.test", CAROL, room, ["a.test"], {})
    await settle([a, b, c])
    # a.test closes its domain to b.test only, at run time.
    assert a.hs.trust is not None
    await a.hs.trust.set_override("", ["b.test"])
    msg = await a.say("a.test", room, ALICE, "for b only")
    await settle([a, b, c])
    assert await b.events.get_event("b.test", msg.event_id) is not None
    assert await c.events.get_event("c.test", msg.event_id) is None
    assert await outbox_rows(a, "c.test") == 0
    rows = await a.hs.database.fetch(
        "SELECT destination, event_id, reason, last_error FROM federation_dead_letters")
    assert [(r["destination"], r["event_id"], r["reason"]) for r in rows] == [
        ("c.test", msg.event_id, "untrusted")]
    assert "c.test is not in the trust domain of a.test" in rows[0]["last_error"]
    # No backoff was recorded against c.test: it was never tried.
    state = await OutboxStore(a.hs.database).get_destination("c.test")
    assert state is None or state.failure_count == 0
    # EDUs neither.
    await a.sender.send_edu("a.test", ["b.test", "c.test"], "m.typing",
                            {"room_id": room, "user_id": ALICE, "typing": True})
    assert await outbox_rows(a, "c.test") == 0


async def test_nothing_reaches_an_untrusted_peer(nodes: StartFn, peer: RecordingPeer) -> None:
    a = await nodes("a.test", trusted=["b.test"])
    client = a.hs.keys.client
    assert client is not None
    client.destination_overrides["evil.test"] = peer.url
    # Remote join via the untrusted server: refused as a peer's 403 would be.
    with pytest.raises(MatrixError) as e:
        await a.remote_rooms.remote_join("a.test", ALICE, "!room:evil.test", ["evil.test"], {})
    assert e.value.code == 403 and e.value.errcode == "M_FORBIDDEN"
    assert "evil.test is not in the trust domain of a.test" in e.value.msg
    # Profile query, invite, raw requests, key fetches: all refused locally.
    with pytest.raises(UntrustedDestinationError):
        await client.get_json("evil.test", "/_matrix/federation/v1/query/profile")
    with pytest.raises(FederationHttpError):
        await client.get_json("evil.test", "/_matrix/key/v2/server")
    assert await a.hs.keys.keyring.get_verify_keys("evil.test", ["ed25519:x"], 0) == {}
    room = await a.create_room(ALICE, ROOM_V11)
    with pytest.raises(MatrixError) as e:
        await a.remote_rooms.remote_invite("a.test", ALICE, room, "@eve:evil.test", {})
    assert e.value.code == 403
    assert peer.requests == []
