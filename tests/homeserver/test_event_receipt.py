"""Receiving remote events (receipt checks 4-6) with real stores on both engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey
from signedjson.key import decode_verify_key_bytes, generate_signing_key, get_verify_key
from unpaddedbase64 import decode_base64

from federation.clock import FakeClock
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion, get_room_version
from federation.signing import add_hashes_and_signatures
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.event_receipt import EventReceiptHandler, MissingEventsError, Outcome
from storage.database import Database
from storage.stores.events import EventStore
from storage.stores.state import StateStore

CORPUS = Path("/work/shared/synapse-corpus")
LOCAL = "local.test"
REMOTE = "remote.test"
ALICE = "@alice:remote.test"
BOB = "@bob:remote.test"
UNKNOWN = "$" + "A" * 43


def corpus_keys() -> dict[str, dict[str, VerifyKey]]:
    keys: dict[str, dict[str, VerifyKey]] = {}
    for f in (CORPUS / "keys").glob("*.key_v2_server.json"):
        doc = json.loads(f.read_text())
        keys[doc["server_name"]] = {
            kid: decode_verify_key_bytes(kid, decode_base64(v["key"]))
            for kid, v in doc["verify_keys"].items()
        }
    return keys


@pytest.mark.parametrize("version", ["v10", "v11", "v12"])
async def test_replay_synapse_corpus(database: Database, version: str) -> None:
    """Every event of the Synapse-made room, received in order, is accepted,
    and the final state is the one Synapse reports."""
    pdus = json.loads((CORPUS / version / "events.json").read_text())
    expected = json.loads((CORPUS / version / "state.json").read_text())
    rv = get_room_version(version[1:])
    events = EventStore(database, StateStore(database))
    handler = EventReceiptHandler(database, events)
    keys = corpus_keys()
    outcomes = [await handler.receive_pdu(LOCAL, pdu, rv, keys) for pdu in pdus]
    assert [o.outcome for o in outcomes] == [Outcome.ACCEPTED] * len(pdus)
    room_id = Event(pdus[1], "$x", rv).room_id
    current = await events.state.get_current_state(LOCAL, room_id)
    want = {
        (p["type"], p["state_key"]): compute_event_id(p, rv) for p in expected["pdus"]
    }
    assert dict(current) == want
    assert await events.get_forward_extremities(LOCAL, room_id) == [outcomes[-1].event_id]
    # Receiving it all again changes nothing.
    again = await handler.receive_pdu(LOCAL, pdus[5], rv, keys)
    assert not again.newly_persisted and again.outcome is Outcome.ACCEPTED


class RemoteServer:
    """A server that makes events with real signatures, for our tenant to receive."""

    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.key = generate_signing_key("r1")
        self.keys = {REMOTE: {"ed25519:r1": get_verify_key(self.key)}}
        self.clock = FakeClock()

    def event(self, **pdu: Any) -> dict[str, Any]:
        pdu.setdefault("origin_server_ts", self.clock.time_ms())
        pdu.setdefault("content", {})
        return add_hashes_and_signatures(pdu, self.rv, REMOTE, self.key)


async def remote_room(
    database: Database, rv: RoomVersion = ROOM_V11
) -> tuple[RemoteServer, EventStore, list[Event], str]:
    """A room made by the remote tenant on the same node (alice, then bob joined)."""
    remote = RemoteServer(rv)
    events = EventStore(database, StateStore(database))
    creation = EventCreationHandler(database, events, remote.clock, {REMOTE: remote.key}.__getitem__)
    room_id = await creation.create_room(REMOTE, ALICE, rv)
    await creation.create_event(REMOTE, room_id, event_type="m.room.member", sender=BOB,
                                state_key=BOB, content={"membership": "join"})
    stream = await events.get_stream_events(REMOTE, 0, 100)
    return remote, events, [s.event for s in stream], room_id


async def test_rejections_and_soft_failure(database: Database) -> None:
    remote, events, made, room_id = await remote_room(database)
    handler = EventReceiptHandler(database, events)
    for ev in made:
        got = await handler.receive_pdu(LOCAL, ev.pdu, ev.room_version, remote.keys)
        assert got.outcome is Outcome.ACCEPTED
    ids = {(e.type, e.state_key): e.event_id for e in made}
    create, pl = ids[("m.room.create", "")], ids[("m.room.power_levels", "")]
    jr = ids[("m.room.join_rules", "")]
    alice_join, bob_join = ids[("m.room.member", ALICE)], ids[("m.room.member", BOB)]
    head = made[-1]

    # Step 4: mallory's auth events do not make her a member.
    mallory = remote.event(type="m.room.message", room_id=room_id, sender="@mallory:remote.test",
                           prev_events=[head.event_id], auth_events=[create, pl],
                           depth=head.depth + 1, content={"body": "hi"})
    got = await handler.receive_pdu(LOCAL, mallory, ROOM_V11, remote.keys)
    assert got.outcome is Outcome.REJECTED and "not joined" in (got.reason or "")

    # Bob leaves (accepted), then claims his old join in a message: it passes
    # against its own auth events (step 4) but not the state before it (step 5).
    leave = remote.event(type="m.room.member", room_id=room_id, sender=BOB, state_key=BOB,
                         prev_events=[head.event_id], auth_events=[create, pl, bob_join],
                         depth=head.depth + 1, content={"membership": "leave"})
    got = await handler.receive_pdu(LOCAL, leave, ROOM_V11, remote.keys)
    assert got.outcome is Outcome.ACCEPTED
    leave_id = got.event_id
    sneaky = remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                          prev_events=[leave_id], auth_events=[create, pl, bob_join],
                          depth=head.depth + 2, content={"body": "still here"})
    got = await handler.receive_pdu(LOCAL, sneaky, ROOM_V11, remote.keys)
    assert got.outcome is Outcome.REJECTED

    # Bob rejoins, alice bans him; then a message of bob's built on the state
    # before the ban passes steps 4 and 5 but fails the current state: soft failed.
    rejoin = remote.event(type="m.room.member", room_id=room_id, sender=BOB, state_key=BOB,
                          prev_events=[leave_id], auth_events=[create, pl, jr, leave_id],
                          depth=head.depth + 2, content={"membership": "join"})
    rejoin_out = await handler.receive_pdu(LOCAL, rejoin, ROOM_V11, remote.keys)
    assert rejoin_out.outcome is Outcome.ACCEPTED
    ban = remote.event(type="m.room.member", room_id=room_id, sender=ALICE, state_key=BOB,
                       prev_events=[rejoin_out.event_id],
                       auth_events=[create, pl, alice_join, rejoin_out.event_id],
                       depth=head.depth + 3, content={"membership": "ban"})
    ban_out = await handler.receive_pdu(LOCAL, ban, ROOM_V11, remote.keys)
    assert ban_out.outcome is Outcome.ACCEPTED
    evading = remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                           prev_events=[rejoin_out.event_id],
                           auth_events=[create, pl, rejoin_out.event_id],
                           depth=head.depth + 3, content={"body": "ban evasion"})
    got = await handler.receive_pdu(LOCAL, evading, ROOM_V11, remote.keys)
    assert got.outcome is Outcome.SOFT_FAILED

    # Neither rejected nor soft-failed events reach clients or the extremities.
    assert await events.get_forward_extremities(LOCAL, room_id) == [ban_out.event_id]
    visible = {s.event.event_id for s in await events.get_stream_events(LOCAL, 0, 100)}
    assert ban_out.event_id in visible and got.event_id not in visible
    stored = await events.get_stored_events(LOCAL, [got.event_id])
    assert stored[got.event_id].soft_failed
    current = await events.state.get_current_state(LOCAL, room_id)
    assert current[("m.room.member", BOB)] == ban_out.event_id

    # A fork that merges: a message on top of both the ban and the soft-failed
    # message resolves the state across them.
    merge = remote.event(type="m.room.message", room_id=room_id, sender=ALICE,
                         prev_events=[ban_out.event_id, got.event_id],
                         auth_events=[create, pl, alice_join],
                         depth=head.depth + 4, content={"body": "merged"})
    merged = await handler.receive_pdu(LOCAL, merge, ROOM_V11, remote.keys)
    assert merged.outcome is Outcome.ACCEPTED
    before = await events.get_state_before(LOCAL, merged.event_id)
    assert before is not None and before[("m.room.member", BOB)] == ban_out.event_id
    assert await events.get_forward_extremities(LOCAL, room_id) == [merged.event_id]


async def test_unknown_prev_or_auth_events_store_nothing(database: Database) -> None:
    remote, events, made, room_id = await remote_room(database)
    handler = EventReceiptHandler(database, events)
    for ev in made:
        await handler.receive_pdu(LOCAL, ev.pdu, ev.room_version, remote.keys)
    create = made[0].event_id
    count = await database.fetchval("SELECT COUNT(*) FROM events WHERE tenant = $1", LOCAL)
    orphan = remote.event(type="m.room.message", room_id=room_id, sender=ALICE,
                          prev_events=[UNKNOWN], auth_events=[create],
                          depth=9, content={})
    with pytest.raises(MissingEventsError) as e:
        await handler.receive_pdu(LOCAL, orphan, ROOM_V11, remote.keys)
    assert e.value.missing == [UNKNOWN]
    with pytest.raises(MissingEventsError):
        bad_auth = dict(orphan, prev_events=[made[-1].event_id], auth_events=["$" + "B" * 43])
        await handler.receive_pdu(LOCAL, remote.event(**{k: v for k, v in bad_auth.items()
                                                         if k not in ("hashes", "signatures")}),
                                  ROOM_V11, remote.keys)
    assert await database.fetchval(
        "SELECT COUNT(*) FROM events WHERE tenant = $1", LOCAL) == count


async def test_v12_rejections_and_soft_failure(database: Database) -> None:
    """v12: the create event is named by the room ID, not listed in auth_events."""
    remote, events, made, room_id = await remote_room(database, ROOM_V12)
    handler = EventReceiptHandler(database, events)
    for ev in made:
        got = await handler.receive_pdu(LOCAL, ev.pdu, ev.room_version, remote.keys)
        assert got.outcome is Outcome.ACCEPTED
    ids = {(e.type, e.state_key): e.event_id for e in made}
    pl, jr = ids[("m.room.power_levels", "")], ids[("m.room.join_rules", "")]
    alice_join, bob_join = ids[("m.room.member", ALICE)], ids[("m.room.member", BOB)]
    head = made[-1]

    # Step 4: not a member by her own auth events.
    mallory = remote.event(type="m.room.message", room_id=room_id, sender="@mallory:remote.test",
                           prev_events=[head.event_id], auth_events=[pl],
                           depth=head.depth + 1, content={"body": "hi"})
    got = await handler.receive_pdu(LOCAL, mallory, ROOM_V12, remote.keys)
    assert got.outcome is Outcome.REJECTED and "not joined" in (got.reason or "")
    # Listing the create event in auth_events is itself a rejection in v12.
    listed = remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                          prev_events=[head.event_id], auth_events=[made[0].event_id, pl, bob_join],
                          depth=head.depth + 1, content={"body": "create listed"})
    got = await handler.receive_pdu(LOCAL, listed, ROOM_V12, remote.keys)
    assert got.outcome is Outcome.REJECTED

    # Alice bans bob; bob's message built before the ban: soft-failed.
    ban = remote.event(type="m.room.member", room_id=room_id, sender=ALICE, state_key=BOB,
                       prev_events=[head.event_id], auth_events=[pl, alice_join, bob_join],
                       depth=head.depth + 1, content={"membership": "ban"})
    ban_out = await handler.receive_pdu(LOCAL, ban, ROOM_V12, remote.keys)
    assert ban_out.outcome is Outcome.ACCEPTED
    evading = remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                           prev_events=[head.event_id], auth_events=[pl, bob_join],
                           depth=head.depth + 1, content={"body": "ban evasion"})
    got = await handler.receive_pdu(LOCAL, evading, ROOM_V12, remote.keys)
    assert got.outcome is Outcome.SOFT_FAILED
    assert await events.get_forward_extremities(LOCAL, room_id) == [ban_out.event_id]
    current = await events.state.get_current_state(LOCAL, room_id)
    assert current[("m.room.member", BOB)] == ban_out.event_id
    assert jr in current.values()


async def test_step5_rejection_by_state_resolved_across_prev_events(database: Database) -> None:
    """The state before an event with two prev_events is their resolution: each
    branch alone would allow bob's message, or would not, but the resolved
    state (his later leave wins over his join) decides."""
    remote, events, made, room_id = await remote_room(database)
    handler = EventReceiptHandler(database, events)
    for ev in made:
        await handler.receive_pdu(LOCAL, ev.pdu, ev.room_version, remote.keys)
    ids = {(e.type, e.state_key): e.event_id for e in made}
    create, pl = ids[("m.room.create", "")], ids[("m.room.power_levels", "")]
    alice_join, bob_join = ids[("m.room.member", ALICE)], ids[("m.room.member", BOB)]
    head = made[-1]

    remote.clock.advance(10)
    chat = remote.event(type="m.room.message", room_id=room_id, sender=ALICE,
                        prev_events=[head.event_id], auth_events=[create, pl, alice_join],
                        depth=head.depth + 1, content={"body": "branch one"})
    chat_out = await handler.receive_pdu(LOCAL, chat, ROOM_V11, remote.keys)
    remote.clock.advance(10)
    leave = remote.event(type="m.room.member", room_id=room_id, sender=BOB, state_key=BOB,
                         prev_events=[head.event_id], auth_events=[create, pl, bob_join],
                         depth=head.depth + 1, content={"membership": "leave"})
    leave_out = await handler.receive_pdu(LOCAL, leave, ROOM_V11, remote.keys)
    assert {chat_out.outcome, leave_out.outcome} == {Outcome.ACCEPTED}
    remote.clock.advance(10)

    def message(prevs: list[str], body: str) -> dict[str, Any]:
        return remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                            prev_events=prevs, auth_events=[create, pl, bob_join],
                            depth=head.depth + 2, content={"body": body})

    # On the branch where bob is still joined alone it passes step 5 (and is
    # only soft-failed, since the room's current state has his leave).
    alone = await handler.receive_pdu(LOCAL, message([chat_out.event_id], "one branch"),
                                      ROOM_V11, remote.keys)
    assert alone.outcome is Outcome.SOFT_FAILED
    # On both branches: the resolved state has bob's leave (same mainline
    # position, later origin_server_ts): step 5 rejects it.
    both = await handler.receive_pdu(
        LOCAL, message([chat_out.event_id, leave_out.event_id], "both branches"),
        ROOM_V11, remote.keys)
    assert both.outcome is Outcome.REJECTED and "not joined" in (both.reason or "")
    before = await events.get_state_before(LOCAL, both.event_id)
    assert before is not None and before[("m.room.member", BOB)] == leave_out.event_id


async def test_soft_fail_checked_when_prev_events_add_an_older_event(database: Database) -> None:
    """Step 6 is skipped only when prev_events are exactly the forward
    extremities. Naming every extremity plus an older event can resolve the
    state before the event differently from the current state, so it must
    still be checked (as Synapse's ``_check_for_soft_fail`` does)."""
    remote, events, made, room_id = await remote_room(database)
    handler = EventReceiptHandler(database, events)
    for ev in made:
        await handler.receive_pdu(LOCAL, ev.pdu, ev.room_version, remote.keys)
    ids = {(e.type, e.state_key): e.event_id for e in made}
    create, pl = ids[("m.room.create", "")], ids[("m.room.power_levels", "")]
    bob_join = ids[("m.room.member", BOB)]
    head = made[-1]
    assert head.event_id == bob_join

    # Bob leaves, with a timestamp before his join's: in a resolution between
    # the two (neither a power event, same mainline position) the join sorts
    # last and wins, while the room's current state has him left.
    leave = remote.event(type="m.room.member", room_id=room_id, sender=BOB, state_key=BOB,
                         prev_events=[bob_join], auth_events=[create, pl, bob_join],
                         depth=head.depth + 1, content={"membership": "leave"},
                         origin_server_ts=head.pdu["origin_server_ts"] - 1000)
    leave_out = await handler.receive_pdu(LOCAL, leave, ROOM_V11, remote.keys)
    assert leave_out.outcome is Outcome.ACCEPTED
    assert await events.get_forward_extremities(LOCAL, room_id) == [leave_out.event_id]

    msg = remote.event(type="m.room.message", room_id=room_id, sender=BOB,
                       prev_events=[leave_out.event_id, bob_join],
                       auth_events=[create, pl, bob_join],
                       depth=head.depth + 2, content={"body": "back in by the older branch"})
    got = await handler.receive_pdu(LOCAL, msg, ROOM_V11, remote.keys)
    before = await events.get_state_before(LOCAL, got.event_id)
    assert before is not None and before[("m.room.member", BOB)] == bob_join  # step 5 passes
    assert got.outcome is Outcome.SOFT_FAILED
    assert await events.get_forward_extremities(LOCAL, room_id) == [leave_out.event_id]
    current = await events.state.get_current_state(LOCAL, room_id)
    assert current[("m.room.member", BOB)] == leave_out.event_id
