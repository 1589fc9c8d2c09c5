"""Creating events and rooms for local users, with real stores on both engines."""

from __future__ import annotations

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.types import SigningKey

from federation.auth_rules import AuthError, auth_types_for_event
from federation.clock import FakeClock
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.signing import verify_pdu
from homeserver.handlers.event_creation import EventCreationHandler
from storage.database import Database
from storage.stores.events import EventStore
from storage.stores.state import StateStore

TENANT = "a.test"
ALICE = "@alice:a.test"


def make_handler(db: Database, keys: dict[str, SigningKey]) -> tuple[EventCreationHandler, EventStore]:
    events = EventStore(db, StateStore(db))
    return EventCreationHandler(db, events, FakeClock(), keys.__getitem__), events


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=lambda rv: f"v{rv.identifier}")
async def test_create_room(database: Database, rv: RoomVersion) -> None:
    key = generate_signing_key("k1")
    handler, events = make_handler(database, {TENANT: key})
    room_id = await handler.create_room(TENANT, ALICE, rv)

    state = await events.state.get_current_state(TENANT, room_id)
    assert set(state) == {
        ("m.room.create", ""), ("m.room.member", ALICE), ("m.room.power_levels", ""),
        ("m.room.join_rules", ""), ("m.room.history_visibility", ""),
    }
    create_id = state[("m.room.create", "")]
    if rv.room_id_from_create_event:
        assert room_id == "!" + create_id[1:]
    else:
        assert room_id.endswith(":" + TENANT)
    loaded = await events.get_events(TENANT, state.values())
    keys = {TENANT: {"ed25519:k1": get_verify_key(key)}}
    by_depth = sorted(loaded.values(), key=lambda e: e.depth)
    assert [e.depth for e in by_depth] == [1, 2, 3, 4, 5]
    for prev, ev in zip(by_depth, by_depth[1:], strict=False):
        assert ev.prev_event_ids == [prev.event_id]
    for ev in by_depth:
        # Signed so that a remote server accepts it, with the ID it derives.
        assert verify_pdu(ev.pdu, rv, keys).event.event_id == ev.event_id
        before = await events.get_state_before(TENANT, ev.event_id)
        assert before is not None
        expected = {before[k] for k in auth_types_for_event(ev, rv) if k in before}
        assert set(ev.auth_event_ids) == expected
    assert await events.get_forward_extremities(TENANT, room_id) == [by_depth[-1].event_id]

    msg = await handler.create_event(
        TENANT, room_id, event_type="m.room.message", sender=ALICE,
        content={"msgtype": "m.text", "body": "hello"},
    )
    assert msg.depth == 6 and msg.prev_event_ids == [by_depth[-1].event_id]
    assert await events.get_forward_extremities(TENANT, room_id) == [msg.event_id]
    assert await events.state.get_current_state(TENANT, room_id) == state


async def test_refused_event_changes_nothing(database: Database) -> None:
    handler, events = make_handler(database, {TENANT: generate_signing_key("k1")})
    room_id = await handler.create_room(TENANT, ALICE, ROOM_V11)
    count = await database.fetchval("SELECT COUNT(*) FROM events")
    with pytest.raises(AuthError) as e:
        await handler.create_event(
            TENANT, room_id, event_type="m.room.message", sender="@mallory:a.test",
            content={"body": "let me in"},
        )
    assert e.value.errcode == "M_FORBIDDEN" and e.value.rule == "sender_not_joined"
    assert await database.fetchval("SELECT COUNT(*) FROM events") == count


async def test_prev_events_capped_and_depth(database: Database) -> None:
    handler, events = make_handler(database, {TENANT: generate_signing_key("k1")})
    room_id = await handler.create_room(TENANT, ALICE, ROOM_V10)
    sent = []
    for i in range(12):
        sent.append(await handler.create_event(
            TENANT, room_id, event_type="m.room.message", sender=ALICE, content={"body": str(i)},
        ))
    # Pretend the twelve messages are twelve forks.
    async with database.transaction("forks") as txn:
        await events.set_forward_extremities_txn(txn, TENANT, room_id, [e.event_id for e in sent])
    ev = await handler.create_event(
        TENANT, room_id, event_type="m.room.message", sender=ALICE, content={"body": "join"},
    )
    assert len(ev.prev_event_ids) == 10
    # The deepest ten, and one deeper than the deepest.
    assert set(ev.prev_event_ids) == {e.event_id for e in sent[2:]}
    assert ev.depth == sent[-1].depth + 1
    assert set(await events.get_forward_extremities(TENANT, room_id)) == {
        ev.event_id, sent[0].event_id, sent[1].event_id,
    }


class FailingOutbox:
    """An outbox whose write fails: the last write of ``create_event``'s transaction."""

    async def write_event_txn(self, txn: object, tenant: str, event: object) -> None:
        raise RuntimeError("outbox unavailable")


async def test_failed_write_after_persist_changes_nothing(database: Database) -> None:
    """Persisting, extremities, current state and the outbox are one transaction:
    a failure in the last write leaves none of the others behind."""
    key = generate_signing_key("k1")
    handler, events = make_handler(database, {TENANT: key})
    room_id = await handler.create_room(TENANT, ALICE, ROOM_V11)
    count = await database.fetchval("SELECT COUNT(*) FROM events")
    extremities = await events.get_forward_extremities(TENANT, room_id)
    state = await events.state.get_current_state(TENANT, room_id)
    failing = EventCreationHandler(database, events, FakeClock(), {TENANT: key}.__getitem__,
                                   outbox=FailingOutbox())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        # A state event: it would move the current state too.
        await failing.create_event(TENANT, room_id, event_type="m.room.topic", sender=ALICE,
                                   state_key="", content={"topic": "lost"})
    assert await database.fetchval("SELECT COUNT(*) FROM events") == count
    assert await events.get_forward_extremities(TENANT, room_id) == extremities
    assert await events.state.get_current_state(TENANT, room_id) == state
    # Fresh stores (no cache) read the same from the database.
    fresh = EventStore(database, StateStore(database))
    assert await fresh.get_forward_extremities(TENANT, room_id) == extremities
    assert await fresh.state.get_current_state(TENANT, room_id) == state
    # And the handler still works afterwards.
    ok = await handler.create_event(TENANT, room_id, event_type="m.room.topic", sender=ALICE,
                                    state_key="", content={"topic": "kept"})
    assert (await events.state.get_current_state(TENANT, room_id))[("m.room.topic", "")] == ok.event_id
