"""History visibility of events concurrent with a user's join.

Spec ``history_visibility.md``, "Server behaviour", rule 3: with ``shared``
visibility a user sees an event if they joined "at any point after the
event". A user who is joined now is such a user (Synapse: shared history is
hidden only from users not in the room). An event on a branch of the room's
graph concurrent with their join has a state that does not list them, and
their join event is not after it in the room's history either: it used to be
hidden from them for good, so two servers whose users joined at the same
moment never showed the same timeline.
"""

from __future__ import annotations

from typing import Any

from signedjson.key import generate_signing_key

from federation.clock import FakeClock
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import ROOM_V11
from federation.signing import add_hashes_and_signatures
from homeserver.handlers.client_stores import DatabaseStores, TenantStores
from homeserver.handlers.event_receipt import EventReceiptHandler
from homeserver.handlers.visibility import filter_events_for_client
from storage.database import Database

LOCAL = "a.test"
ALICE = "@alice:a.test"
CAROL = "@carol:a.test"
DAVE = "@dave:a.test"
BOB = "@bob:b.test"


async def test_joined_user_sees_events_concurrent_with_their_join(database: Database) -> None:
    clock = FakeClock()
    key = generate_signing_key("a1")
    stores = DatabaseStores.build(database, clock, {LOCAL: key}.__getitem__)
    ts = TenantStores(LOCAL, stores)
    events = stores.events
    receipt = EventReceiptHandler(database, events)
    remote_key = generate_signing_key("b1")
    room = await stores.creation.create_room(LOCAL, ALICE, ROOM_V11, history_visibility="shared")

    async def remote(event_type: str, content: dict[str, Any], prevs: list[str],
                     state_key: str | None = None) -> Event:
        state = await events.state.get_current_state(LOCAL, room)
        keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB)]
        if event_type == "m.room.member":
            keys.append(("m.room.join_rules", ""))
        auth = [state[k] for k in keys if k in state]
        depth = max(e.depth for e in (await events.get_events(LOCAL, prevs)).values()) + 1
        pdu: dict[str, Any] = {
            "type": event_type, "room_id": room, "sender": BOB, "content": content,
            "prev_events": prevs, "auth_events": auth, "depth": depth,
            "origin_server_ts": clock.time_ms(),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        signed = add_hashes_and_signatures(pdu, ROOM_V11, "b.test", remote_key)
        ev = Event(signed, compute_event_id(signed, ROOM_V11), ROOM_V11)
        await receipt.receive_verified_pdu(LOCAL, ev)
        return ev

    base = await events.get_forward_extremities(LOCAL, room)
    bob_join = await remote("m.room.member", {"membership": "join"}, base, state_key=BOB)
    # Carol joins here while Bob, on his server, has not seen her join yet.
    await stores.creation.create_event(LOCAL, room, event_type="m.room.member", sender=CAROL,
                                       state_key=CAROL, content={"membership": "join"})
    concurrent = await remote("m.room.message", {"msgtype": "m.text", "body": "hi"},
                              [bob_join.event_id])
    stored = list((await events.get_stored_events(LOCAL, [concurrent.event_id])).values())
    assert stored and not stored[0].soft_failed and stored[0].rejected_reason is None
    state_at = await events.get_state_before(LOCAL, concurrent.event_id)
    assert state_at is not None and ("m.room.member", CAROL) not in state_at

    assert await filter_events_for_client(ts, CAROL, stored) == stored
    # Shared history is still hidden from users who are not in the room...
    assert await filter_events_for_client(ts, DAVE, stored) == []
    # ...including Carol once she has left (her join is not after the event).
    await stores.creation.create_event(LOCAL, room, event_type="m.room.member", sender=CAROL,
                                       state_key=CAROL, content={"membership": "leave"})
    assert await filter_events_for_client(ts, CAROL, stored) == []
