"""Concord's protocol core against Synapse: a join built by ``federation/`` is accepted.

Independently of Concord's join handler, this test does by hand what a join
does (Server-Server API "Joining Rooms"): ``make_join`` with every room
version we support, fill in the template, hash and sign it with
:func:`federation.signing.add_hashes_and_signatures`, compute its ID with
:func:`federation.hashes.compute_event_id`, and ``send_join`` (v2). Synapse
accepting it checks our canonical JSON, content hash, redaction, signing and
event-ID rules against an independent implementation. In the other direction,
every PDU Synapse returns must pass our keyring's receipt checks (Synapse's
key fetched from its ``/_matrix/key/v2/server`` over TLS) and our auth rules.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from federation.auth_rules import check_auth, check_auth_events_selection
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import get_room_version
from federation.signing import add_hashes_and_signatures
from federation.transport.client import FederationHttpError
from homeserver.keys import key_service_for
from tests.interop.concord import ConcordFactory
from tests.interop.synapse import SynapseClient, SynapseRequestError

pytestmark = pytest.mark.interop

OUR_VERSIONS = ["10", "11", "12"]


def _q(s: str) -> str:
    return quote(s, safe="")


@pytest.mark.parametrize("room_version", OUR_VERSIONS)
async def test_synapse_accepts_a_join_built_by_the_protocol_core(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory, room_version: str
) -> None:
    hs = await concord_nodes()
    keys = key_service_for(hs)
    synapse = synapse_client.server
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(
        alice, room_version=room_version, name="core interop"
    )
    await synapse_client.send_message(alice, room_id, "before the join")
    bob = f"@bob:{hs.server_name}"

    made = await keys.client.get_json(
        synapse.server_name,
        f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(bob)}",
        query={"ver": OUR_VERSIONS},
        origin=hs.server_name,
    )
    assert made["room_version"] == room_version
    rv = get_room_version(room_version)
    template: dict[str, Any] = made["event"]
    assert template["type"] == "m.room.member"
    assert template["state_key"] == bob
    assert template["content"]["membership"] == "join"

    pdu = dict(template)
    pdu["origin_server_ts"] = hs.clock.time_ms()
    # Outside the redacted form: Synapse keeps it only if our content hash is right
    # (a mismatch makes the receiver redact the event, not reject it).
    pdu["content"] = {**template["content"], "displayname": "Bob from Concord"}
    signed = add_hashes_and_signatures(pdu, rv, hs.server_name, hs.signing_key)
    event_id = compute_event_id(signed, rv)

    resp = await keys.client.put_json(
        synapse.server_name,
        f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(event_id)}",
        body=signed,
        origin=hs.server_name,
    )

    # Every PDU Synapse sent passes our receipt checks, with Synapse's key
    # fetched by our keyring.
    events: dict[str, Event] = {}
    for raw in resp["state"] + resp["auth_chain"]:
        verified = await keys.keyring.verify_pdu(raw, rv)
        assert verified.content_hash_ok, raw
        events[verified.event.event_id] = verified.event
    state = {e.state_tuple: e for e in (events[compute_event_id(p, rv)] for p in resp["state"])}
    assert state[("m.room.create", "")].content["room_version"] == room_version
    assert state[("m.room.member", alice.user_id)].membership == "join"

    # Our join passes our own auth rules against the auth events Synapse chose.
    join = Event(signed, event_id, rv)
    # events also holds the v12 create event, which v12 leaves out of auth_events.
    keyed = check_auth_events_selection(join, events)
    check_auth(join, keyed)

    # Synapse took it into the room: Alice sees Bob joined, under our event ID.
    member = await synapse_client.state_event(alice, room_id, "m.room.member", bob)
    assert member == {"membership": "join", "displayname": "Bob from Concord"}
    timeline = await synapse_client.all_messages(alice, room_id)
    assert event_id in [e["event_id"] for e in timeline]


async def test_synapse_refuses_a_join_altered_after_signing(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    """The join test above can fail: a PDU altered after signing (its ID recomputed
    to match, so only the signature is wrong) is refused by Synapse."""
    hs = await concord_nodes()
    keys = key_service_for(hs)
    synapse = synapse_client.server
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(alice, room_version="11")
    bob = f"@bob:{hs.server_name}"
    made = await keys.client.get_json(
        synapse.server_name,
        f"/_matrix/federation/v1/make_join/{_q(room_id)}/{_q(bob)}",
        query={"ver": OUR_VERSIONS},
        origin=hs.server_name,
    )
    rv = get_room_version("11")
    signed = add_hashes_and_signatures(
        {**made["event"], "origin_server_ts": hs.clock.time_ms()},
        rv,
        hs.server_name,
        hs.signing_key,
    )
    tampered = {**signed, "origin_server_ts": signed["origin_server_ts"] + 1}
    event_id = compute_event_id(tampered, rv)

    with pytest.raises(FederationHttpError) as exc:
        await keys.client.put_json(
            synapse.server_name,
            f"/_matrix/federation/v2/send_join/{_q(room_id)}/{_q(event_id)}",
            body=tampered,
            origin=hs.server_name,
        )
    assert exc.value.status == 403, exc.value.body
    assert "signature" in exc.value.body["error"], exc.value.body
    with pytest.raises(SynapseRequestError) as missing:
        await synapse_client.state_event(alice, room_id, "m.room.member", bob)
    assert missing.value.status == 404
