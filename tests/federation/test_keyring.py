"""federation/keyring.py with dict fakes and a FakeClock (no sockets here;
the live two-node tests are in tests/homeserver/test_key_api*.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from federation.clock import FakeClock
from federation.keyring import (
    BadSignatureError,
    DirectKeyFetcher,
    Keyring,
    MemoryKeyCache,
    NotaryKeyFetcher,
    NotarySpec,
    UnknownKeyError,
    UnsignedError,
    local_fetched_keys,
)
from federation.server_keys import (
    MAX_KEY_VALIDITY_MS,
    FetchedKey,
    KeyLookupError,
    OldVerifyKey,
    build_server_key_response,
    key_id_of,
    notary_sign,
)

DAY_S = 24 * 3600
DAY_MS = DAY_S * 1000
CORPUS = Path("/work/shared/synapse-corpus")


class Peer:
    """A remote server's keys, rotatable."""

    def __init__(self, name: str, clock: FakeClock, validity_ms: int = DAY_MS) -> None:
        self.name = name
        self.clock = clock
        self.validity_ms = validity_ms
        self.keys = [generate_signing_key("k1")]
        self.old: list[OldVerifyKey] = []
        self.up = True

    def rotate(self, version: str) -> None:
        for k in self.keys:
            self.old.append(OldVerifyKey(key_id_of(k), get_verify_key(k), self.clock.time_ms()))
        self.keys = [generate_signing_key(version)]

    def response(self) -> dict[str, Any]:
        return build_server_key_response(
            self.name,
            self.keys,
            self.old,
            now_ms=self.clock.time_ms(),
            validity_ms=self.validity_ms,
        )

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = sign_json(dict(obj), self.name, self.keys[0])
        return out


class FakeHttp:
    """KeyHttpClient over in-process peers and notaries; counts requests."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.notaries: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None

    async def get_json(self, destination: str, path: str, *, timeout_s: float | None = None) -> Any:
        self.requests.append((destination, path))
        if self.gate is not None:
            await self.gate.wait()
        peer = self.peers.get(destination)
        if peer is None or not peer.up:
            raise ConnectionError(f"{destination} is down")
        assert path == "/_matrix/key/v2/server"
        return peer.response()

    async def post_json(
        self, destination: str, path: str, body: Any, *, timeout_s: float | None = None
    ) -> Any:
        self.requests.append((destination, path))
        assert path == "/_matrix/key/v2/query"
        handler = self.notaries.get(destination)
        if handler is None:
            raise ConnectionError(f"{destination} is down")
        return handler(body)


def count(http: FakeHttp, destination: str) -> int:
    return sum(1 for d, _ in http.requests if d == destination)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http() -> FakeHttp:
    return FakeHttp()


def make_keyring(
    http: FakeHttp, clock: FakeClock, notaries: list[NotarySpec] | None = None
) -> tuple[Keyring, MemoryKeyCache]:
    cache = MemoryKeyCache()
    fetchers: list[Any] = [DirectKeyFetcher(http, clock)]
    for n in notaries or []:
        fetchers.append(NotaryKeyFetcher(http, clock, n))
    return Keyring(fetchers, cache, clock), cache


async def test_fetch_then_serve_from_cache(http: FakeHttp, clock: FakeClock) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, cache = make_keyring(http, clock)
    now = clock.time_ms()
    keys = await keyring.get_verify_keys("peer.test", ["ed25519:k1"], now)
    assert bytes(keys["ed25519:k1"].verify_key) == bytes(get_verify_key(peer.keys[0]))
    assert "ed25519:k1" in cache.keys["peer.test"]
    await keyring.get_verify_keys("peer.test", ["ed25519:k1"], now)
    assert count(http, "peer.test") == 1


async def test_unknown_key_id_triggers_refetch_after_rotation(
    http: FakeHttp, clock: FakeClock
) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    signed_before = peer.sign({"n": 1})
    t_before = clock.time_ms()
    await keyring.verify_json_for_server(signed_before, "peer.test", t_before)
    clock.advance(60)
    peer.rotate("k2")
    signed_after = peer.sign({"n": 2})
    await keyring.verify_json_for_server(signed_after, "peer.test", clock.time_ms())
    assert count(http, "peer.test") == 2
    # The old key now comes from old_verify_keys: good for what it signed before
    # it expired, not after, and never for requests.
    await keyring.verify_json_for_server(signed_before, "peer.test", t_before)
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(signed_before, "peer.test", clock.time_ms() + 1)
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(signed_before, "peer.test", t_before, allow_old=False)


async def test_expired_key_is_refetched(http: FakeHttp, clock: FakeClock) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock, validity_ms=3600_000)
    keyring, cache = make_keyring(http, clock)
    t0 = clock.time_ms()
    first = await keyring.get_verify_keys("peer.test", ["ed25519:k1"], t0)
    assert first["ed25519:k1"].valid_until_ts == t0 + 3600_000
    clock.advance(7200)
    # An event from before the expiry still verifies from the cache...
    await keyring.get_verify_keys("peer.test", ["ed25519:k1"], t0 + 10)
    assert count(http, "peer.test") == 1
    # ...but a signature made now needs a fresh response.
    again = await keyring.get_verify_keys("peer.test", ["ed25519:k1"], clock.time_ms())
    assert again["ed25519:k1"].valid_until_ts == clock.time_ms() + 3600_000
    assert count(http, "peer.test") == 2


async def test_long_validity_is_capped_at_seven_days(http: FakeHttp, clock: FakeClock) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock, validity_ms=365 * DAY_MS)
    keyring, _ = make_keyring(http, clock)
    t0 = clock.time_ms()
    keys = await keyring.get_verify_keys("peer.test", ["ed25519:k1"], t0)
    assert keys["ed25519:k1"].valid_until_ts == t0 + MAX_KEY_VALIDITY_MS
    clock.advance(8 * DAY_S)
    await keyring.get_verify_keys("peer.test", ["ed25519:k1"], clock.time_ms())
    assert count(http, "peer.test") == 2


async def test_concurrent_lookups_make_one_request(http: FakeHttp, clock: FakeClock) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    http.gate = asyncio.Event()
    now = clock.time_ms()
    ids = ["ed25519:k1", "ed25519:nope1", "ed25519:nope2"]
    tasks = [
        asyncio.create_task(keyring.get_verify_keys("peer.test", [ids[i % 3]], now))
        for i in range(12)
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    # Late arrivals while the request is in flight wait for it too.
    late = asyncio.create_task(keyring.get_verify_keys("peer.test", ["ed25519:k1"], now))
    for _ in range(5):
        await asyncio.sleep(0)
    http.gate.set()
    results = await asyncio.gather(*tasks, late)
    assert count(http, "peer.test") == 1
    assert [set(r) for r in results[:3]] == [{"ed25519:k1"}, set(), set()]
    assert set(results[-1]) == {"ed25519:k1"}


async def test_negative_results_are_cached_briefly(http: FakeHttp, clock: FakeClock) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    now = clock.time_ms()
    for _ in range(5):
        assert await keyring.get_verify_keys("peer.test", ["ed25519:junk"], now) == {}
    assert count(http, "peer.test") == 1
    clock.advance(61)
    await keyring.get_verify_keys("peer.test", ["ed25519:junk"], clock.time_ms())
    assert count(http, "peer.test") == 2


async def test_unreachable_origin_is_not_hammered(http: FakeHttp, clock: FakeClock) -> None:
    keyring, _ = make_keyring(http, clock)
    for _ in range(3):
        assert await keyring.get_verify_keys("down.test", ["ed25519:a"], clock.time_ms()) == {}
    assert count(http, "down.test") == 1


def notary_handler(
    notary_name: str, notary_key: Any, http: FakeHttp, lie: str | None = None
) -> Any:
    def handle(body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for server in body["server_keys"]:
            peer = http.peers[server]
            resp = peer.response()
            if lie == "origin":
                resp["verify_keys"]["ed25519:k1"]["key"] = "A" * 43
            signed = notary_sign(resp, notary_name, [notary_key])
            if lie == "notary":
                sig = signed["signatures"][notary_name]["ed25519:n"]
                signed["signatures"][notary_name]["ed25519:n"] = (
                    "B" if sig[0] != "B" else "C"
                ) + sig[1:]
            out.append(signed)
        return {"server_keys": out}

    return handle


@pytest.mark.parametrize("lie", [None, "notary", "origin"])
async def test_notary_used_when_origin_down(
    http: FakeHttp, clock: FakeClock, lie: str | None
) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock)
    nkey = generate_signing_key("n")
    http.notaries["notary.test"] = notary_handler("notary.test", nkey, http, lie)
    spec = NotarySpec("notary.test", {"ed25519:n": get_verify_key(nkey)})
    keyring, cache = make_keyring(http, clock, [spec])
    peer.up = False
    signed = peer.sign({"x": 1})
    if lie is None:
        await keyring.verify_json_for_server(signed, "peer.test", clock.time_ms())
        assert count(http, "notary.test") == 1
        # Served again as a notary, the cached response still carries the
        # origin's self-signature.
        responses = await keyring.get_responses_for_notary("peer.test", [], clock.time_ms())
        assert responses and "peer.test" in responses[0]["signatures"]
    else:
        with pytest.raises(UnknownKeyError):
            await keyring.verify_json_for_server(signed, "peer.test", clock.time_ms())
        assert cache.keys.get("peer.test", {}) == {}


async def test_notary_is_not_asked_when_origin_answers(http: FakeHttp, clock: FakeClock) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock)
    nkey = generate_signing_key("n")
    http.notaries["notary.test"] = notary_handler("notary.test", nkey, http)
    spec = NotarySpec("notary.test", {"ed25519:n": get_verify_key(nkey)})
    keyring, _ = make_keyring(http, clock, [spec])
    await keyring.get_verify_keys("peer.test", ["ed25519:k1"], clock.time_ms())
    assert count(http, "notary.test") == 0


async def test_notary_answer_for_another_server_is_ignored(
    http: FakeHttp, clock: FakeClock
) -> None:
    evil = http.peers["evil.test"] = Peer("evil.test", clock)
    victim = Peer("victim.test", clock)
    nkey = generate_signing_key("n")

    def handle(body: dict[str, Any]) -> dict[str, Any]:
        return {"server_keys": [notary_sign(evil.response(), "notary.test", [nkey])]}

    http.notaries["notary.test"] = handle
    spec = NotarySpec("notary.test", {"ed25519:n": get_verify_key(nkey)})
    keyring, cache = make_keyring(http, clock, [spec])
    assert await keyring.get_verify_keys("victim.test", ["ed25519:k1"], clock.time_ms()) == {}
    assert "evil.test" not in cache.keys and "victim.test" not in cache.keys
    del victim


async def test_notary_garbage_response(http: FakeHttp, clock: FakeClock) -> None:
    nkey = generate_signing_key("n")
    http.notaries["notary.test"] = lambda body: {"server_keys": "nope"}
    fetcher = NotaryKeyFetcher(
        http, clock, NotarySpec("notary.test", {"ed25519:n": get_verify_key(nkey)})
    )
    with pytest.raises(KeyLookupError):
        await fetcher.fetch("peer.test", ["ed25519:k1"], 0)


async def test_verify_json_for_server_failures(http: FakeHttp, clock: FakeClock) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    now = clock.time_ms()
    with pytest.raises(UnsignedError):
        await keyring.verify_json_for_server({"a": 1}, "peer.test", now)
    with pytest.raises(UnsignedError):
        await keyring.verify_json_for_server(peer.sign({"a": 1}), "other.test", now)
    tampered = peer.sign({"a": 1})
    tampered["a"] = 2
    with pytest.raises(BadSignatureError):
        await keyring.verify_json_for_server(tampered, "peer.test", now)
    other_key = sign_json({"a": 1}, "peer.test", generate_signing_key("zz"))
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(other_key, "peer.test", now)
    # Forged signature under the right key ID.
    forged = sign_json({"a": 1}, "peer.test", generate_signing_key("k1"))
    with pytest.raises(BadSignatureError):
        await keyring.verify_json_for_server(forged, "peer.test", now)
    # Unknown extra key IDs are skipped when a known one verifies.
    extra = sign_json(peer.sign({"a": 1}), "peer.test", generate_signing_key("extra"))
    await keyring.verify_json_for_server(extra, "peer.test", now)
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(
            {"signatures": {"peer.test": {"rsa:1": "x"}}}, "peer.test", now
        )


async def test_local_keys_never_leave_the_process(http: FakeHttp, clock: FakeClock) -> None:
    keyring, _ = make_keyring(http, clock)
    sk = generate_signing_key("me")
    old = generate_signing_key("was")
    keyring.set_local_keys(
        "me.test",
        local_fetched_keys(
            "me.test", [sk], [OldVerifyKey("ed25519:was", get_verify_key(old), clock.time_ms())]
        ),
    )
    assert keyring.is_local("me.test")
    now = clock.time_ms()
    await keyring.verify_json_for_server(
        sign_json({"a": 1}, "me.test", sk), "me.test", now + DAY_MS * 100
    )
    old_signed = sign_json({"a": 1}, "me.test", old)
    await keyring.verify_json_for_server(old_signed, "me.test", now - 1)
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(old_signed, "me.test", now)
    assert http.requests == []


async def test_verify_keys_for_several_servers(http: FakeHttp, clock: FakeClock) -> None:
    a = http.peers["a.test"] = Peer("a.test", clock)
    http.peers["b.test"] = Peer("b.test", clock)
    keyring, _ = make_keyring(http, clock)
    got = await keyring.verify_keys_for(
        {"a.test": ["ed25519:k1"], "b.test": ["ed25519:k1", "ed25519:x"]}, clock.time_ms()
    )
    assert set(got) == {"a.test", "b.test"}
    assert bytes(got["a.test"]["ed25519:k1"]) == bytes(get_verify_key(a.keys[0]))
    assert set(got["b.test"]) == {"ed25519:k1"}


async def test_notary_responses_cache_half_life_and_stale_fallback(
    http: FakeHttp, clock: FakeClock
) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock, validity_ms=4 * 3600_000)
    keyring, _ = make_keyring(http, clock)
    now = clock.time_ms()
    r1 = await keyring.get_responses_for_notary("peer.test", [], now)
    assert len(r1) == 1 and r1[0]["server_name"] == "peer.test"
    assert count(http, "peer.test") == 1
    clock.advance(3600)  # within half of the 4 h lifetime: cached
    await keyring.get_responses_for_notary("peer.test", ["ed25519:k1"], clock.time_ms())
    assert count(http, "peer.test") == 1
    # minimum_valid_until_ts beyond what we hold forces a refetch.
    await keyring.get_responses_for_notary("peer.test", [], clock.time_ms() + 5 * 3600_000)
    assert count(http, "peer.test") == 2
    clock.advance(3 * 3600)  # past half-life: refetch, but the origin is down
    peer.up = False
    stale = await keyring.get_responses_for_notary("peer.test", [], clock.time_ms())
    assert count(http, "peer.test") == 3
    assert len(stale) == 1  # the last response is still served
    assert await keyring.get_responses_for_notary("never.test", [], clock.time_ms()) == []


async def test_notary_responses_after_rotation(http: FakeHttp, clock: FakeClock) -> None:
    peer = http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    await keyring.get_verify_keys("peer.test", ["ed25519:k1"], clock.time_ms())
    clock.advance(60)
    peer.rotate("k2")
    await keyring.get_verify_keys("peer.test", ["ed25519:k2"], clock.time_ms())
    responses = await keyring.get_responses_for_notary("peer.test", [], clock.time_ms())
    # Both keys now come from the newest response (k1 listed as old there).
    assert len(responses) == 1
    assert set(responses[0]["old_verify_keys"]) == {"ed25519:k1"}


async def test_corpus_request_signature_verifies(http: FakeHttp, clock: FakeClock) -> None:
    """The X-Matrix-signed /send request that Synapse A sent, checked with A's
    published key (served by a fake origin from the corpus file)."""
    key_resp = json.loads((CORPUS / "keys/corpus-a.test_8521.key_v2_server.json").read_text())

    class CorpusFetcher:
        name = "corpus"
        direct = True

        async def fetch(
            self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
        ) -> dict[str, FetchedKey]:
            from federation.server_keys import parse_server_key_response

            return parse_server_key_response(key_resp, server_name).to_fetched_keys(
                key_resp["valid_until_ts"] - DAY_MS
            )

    keyring = Keyring([CorpusFetcher()], MemoryKeyCache(), clock)
    txn = json.loads((CORPUS / "v11/send_txn.json").read_text())
    header = txn["request"]["headers"]["Authorization"]
    params = dict(p.split("=", 1) for p in header[len("X-Matrix ") :].split(","))
    params = {k: v.strip('"') for k, v in params.items()}
    signed = {
        "method": txn["request"]["method"],
        "uri": txn["request"]["path"],
        "origin": params["origin"],
        "destination": params["destination"],
        "content": txn["body"],
        "signatures": {params["origin"]: {params["key"]: params["sig"]}},
    }
    t = key_resp["valid_until_ts"] - 3600_000
    await keyring.verify_json_for_server(signed, "corpus-a.test:8521", t, allow_old=False)
    signed["content"] = dict(txn["body"], origin="x")
    with pytest.raises(BadSignatureError):
        await keyring.verify_json_for_server(signed, "corpus-a.test:8521", t)


async def test_cancelled_waiter_does_not_cancel_shared_request(
    http: FakeHttp, clock: FakeClock
) -> None:
    http.peers["peer.test"] = Peer("peer.test", clock)
    keyring, _ = make_keyring(http, clock)
    http.gate = asyncio.Event()
    now = clock.time_ms()
    t1 = asyncio.create_task(keyring.get_verify_keys("peer.test", ["ed25519:k1"], now))
    t2 = asyncio.create_task(keyring.get_verify_keys("peer.test", ["ed25519:k1"], now))
    for _ in range(5):
        await asyncio.sleep(0)
    t1.cancel()
    http.gate.set()
    assert set(await t2) == {"ed25519:k1"}
    with pytest.raises(asyncio.CancelledError):
        await t1
    await keyring.close()


class CorpusKeyFetcher:
    """Serves the corpus servers' key responses as if fetched at capture time."""

    name = "corpus"
    direct = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def fetch(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> dict[str, FetchedKey]:
        from federation.server_keys import parse_server_key_response

        self.calls.append(server_name)
        path = CORPUS / "keys" / (server_name.replace(":", "_") + ".key_v2_server.json")
        resp = json.loads(path.read_text())
        return parse_server_key_response(resp, server_name).to_fetched_keys(
            resp["valid_until_ts"] - DAY_MS
        )


@pytest.mark.parametrize("version", ["v10", "v11", "v12"])
async def test_corpus_events_verify_through_the_keyring(version: str, clock: FakeClock) -> None:
    from federation.room_versions import get_room_version

    rv = get_room_version(version[1:])
    fetcher = CorpusKeyFetcher()
    keyring = Keyring([fetcher], MemoryKeyCache(), clock)
    events = json.loads((CORPUS / version / "events.json").read_text())
    expected = json.loads((CORPUS / version / "expected.json").read_text())
    for pdu, exp in zip(events, expected, strict=True):
        verified = await keyring.verify_pdu(pdu, rv)
        assert verified.event.event_id == exp["event_id"]
        assert verified.content_hash_ok
    # One fetch per origin server, however many events it signed.
    assert sorted(fetcher.calls) == sorted(set(fetcher.calls))
    # An event claimed to be from after the key's validity is refused.
    # (The key is skipped as not valid then, before any signature is checked.)
    from federation.signing import SignatureFailure, SignatureVerifyError

    late = dict(events[10], origin_server_ts=events[10]["origin_server_ts"] + 30 * DAY_MS)
    with pytest.raises(SignatureVerifyError) as info:
        await keyring.verify_pdu(late, rv)
    assert info.value.reason is SignatureFailure.UNKNOWN_KEY
