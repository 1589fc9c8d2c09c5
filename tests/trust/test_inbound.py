"""Inbound: requests from servers outside the trust domain are refused with
403 M_FORBIDDEN before their body is read, any key fetched or anything
stored; PDUs whose sender's server is outside it get a per-PDU error."""

from __future__ import annotations

import aiohttp
import pytest
from signedjson.key import generate_signing_key

from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import ROOM_V11
from federation.signing import add_hashes_and_signatures
from federation.transport.client import FederationHttpError
from tests.trust.conftest import StartFn

ALICE = "@alice:a.test"


async def count(node: object, table: str) -> int:
    return int(await node.hs.database.fetchval(f"SELECT COUNT(*) FROM {table}"))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/_matrix/federation/v1/send/t1", {"origin": "c.test", "pdus": [], "edus": []}),
        ("PUT", "/_matrix/federation/v2/invite/!r:a.test/$e", {"event": {}}),
        ("GET", "/_matrix/federation/v1/make_join/!r:a.test/@m:c.test", None),
        ("GET", "/_matrix/federation/v1/query/profile?user_id=@alice:a.test", None),
        ("GET", "/_matrix/federation/v1/version", None),
    ],
)
async def test_untrusted_origin_is_refused_before_anything(
    nodes: StartFn, method: str, path: str, body: object
) -> None:
    a = await nodes("a.test", trusted=["b.test", "*.friends.test"])
    c = await nodes("c.test")
    with pytest.raises(FederationHttpError) as e:
        await c.hs.keys.client.request_json(method, "a.test", path, body=body)  # type: ignore[union-attr]
    assert e.value.status == 403 and e.value.errcode == "M_FORBIDDEN"
    msg = e.value.body["error"]
    assert "c.test is not in the trust domain of a.test" in msg
    assert "none of the 2 patterns of federation.trusted_servers" in msg
    # Nothing stored: not even c's keys were fetched, no transaction recorded.
    assert await a.hs.database.fetchval(
        "SELECT COUNT(*) FROM remote_server_keys WHERE server_name = 'c.test'"
    ) == 0
    assert await count(a, "federation_received_transactions") == 0


async def test_refused_before_the_body_is_read_or_the_signature_checked(nodes: StartFn) -> None:
    a = await nodes("a.test", trusted=["b.test"])
    header = 'X-Matrix origin="c.test",destination="a.test",key="ed25519:x",sig="bm9uc2Vuc2U"'
    async with aiohttp.ClientSession() as s:
        async with s.put(a.hs.base_url("federation") + "/_matrix/federation/v1/send/t9",
                         data=b"{not json at all", headers={"Authorization": header}) as r:
            assert r.status == 403
            assert (await r.json())["errcode"] == "M_FORBIDDEN"
        # A trusted origin with the same junk gets past the trust check to the
        # X-Matrix one (401), so the 403 above is the trust domain's doing.
        bad = header.replace("c.test", "b.test")
        async with s.put(a.hs.base_url("federation") + "/_matrix/federation/v1/send/t9",
                         data=b"{}", headers={"Authorization": bad}) as r:
            assert r.status == 401
        # No Authorization header at all is still X-Matrix's 401.
        async with s.get(a.hs.base_url("federation")
                         + "/_matrix/federation/v1/query/profile?user_id=@x:a.test") as r:
            assert r.status == 401
        # Keys stay readable by anyone.
        async with s.get(a.hs.base_url("federation") + "/_matrix/key/v2/server") as r:
            assert r.status == 200


async def test_trusted_origin_passes_and_wildcards_apply(nodes: StartFn) -> None:
    await nodes("a.test", trusted=["*.friends.test", "b.test"])
    b = await nodes("b.test")
    x = await nodes("x.friends.test")
    deep = await nodes("y.x.friends.test")
    for n in (b, x):
        got = await n.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
        assert "server" in got
    with pytest.raises(FederationHttpError) as e:
        await deep.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    assert e.value.status == 403


async def test_pdu_from_an_untrusted_server_relayed_by_a_trusted_one(nodes: StartFn) -> None:
    a = await nodes("a.test", trusted=["b.test"])
    b = await nodes("b.test")
    room = await a.create_room(ALICE, ROOM_V11)
    state = await a.events.state.get_current_state("a.test", room)
    prevs = await a.events.get_forward_extremities("a.test", room)
    pdu = {
        "type": "m.room.message", "room_id": room, "sender": "@mallory:c.test",
        "content": {"body": "hi"}, "prev_events": prevs,
        "auth_events": [state[("m.room.create", "")]], "depth": 10,
        "origin_server_ts": a.hs.clock.time_ms(),
    }
    signed = add_hashes_and_signatures(pdu, ROOM_V11, "c.test", generate_signing_key("c1"))
    event_id = compute_event_id(signed, ROOM_V11)
    resp = await b.hs.keys.client.put_json(  # type: ignore[union-attr]
        "a.test", "/_matrix/federation/v1/send/r1",
        {"origin": "b.test", "origin_server_ts": 1, "pdus": [signed], "edus": []},
    )
    err = resp["pdus"][event_id]["error"]
    assert "c.test is not in the trust domain of a.test" in err
    assert a.hs.metrics.registry.get_sample_value(
        "concord_federation_inbound_pdus_total", {"result": "refused"}) == 1
    assert await a.events.get_event("a.test", event_id) is None
    assert await a.hs.database.fetchval(
        "SELECT COUNT(*) FROM remote_server_keys WHERE server_name = 'c.test'"
    ) == 0
    assert isinstance(Event(signed, event_id, ROOM_V11).sender, str)


async def test_per_tenant_override(nodes: StartFn) -> None:
    a = await nodes("a.test", trusted=["b.test"], tenants=[
        {"server_name": "t2.test", "trusted_servers": ["c.test"]},
    ])
    b = await nodes("b.test")
    c = await nodes("c.test")
    for n in (b, c):
        n.hs.keys.client.destination_overrides["t2.test"] = a.hs.base_url("federation")  # type: ignore[union-attr]
    # The node-wide rule for a.test, the tenant's own for t2.test.
    await b.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    await c.hs.keys.client.get_json("t2.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    with pytest.raises(FederationHttpError) as e:
        await b.hs.keys.client.get_json("t2.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    assert e.value.status == 403
    assert "tenants[t2.test].trusted_servers" in e.value.body["error"]
    with pytest.raises(FederationHttpError) as e:
        await c.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    assert "of federation.trusted_servers" in e.value.body["error"]

    # An X-Matrix header with no destination (older servers): the tenant the
    # Host header routes to is the one whose domain applies.
    header = 'X-Matrix origin="b.test",key="ed25519:x",sig="bm9uc2Vuc2U"'
    url = a.hs.base_url("federation") + "/_matrix/federation/v1/query/profile?user_id=@x:t2.test"
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Authorization": header, "Host": "t2.test"}) as r:
            assert r.status == 403
            assert "tenants[t2.test].trusted_servers" in (await r.json())["error"]
        # Routed to a.test, b is trusted: on to the X-Matrix check (bad signature).
        async with s.get(url, headers={"Authorization": header, "Host": "a.test"}) as r:
            assert r.status == 401
