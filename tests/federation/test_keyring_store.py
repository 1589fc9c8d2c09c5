"""storage/stores/keys.py on both engines: the keyring's cache and our own keys."""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import generate_signing_key, get_verify_key

from federation.clock import FakeClock
from federation.keyring import DirectKeyFetcher, Keyring
from federation.server_keys import (
    FetchedKey,
    OldVerifyKey,
    build_server_key_response,
    parse_server_key_response,
)
from storage.database import Database
from storage.stores.keys import KeyStore

NOW = 1_700_000_000_000
DAY_MS = 86_400_000


def fetched(
    server: str,
    keys: list[Any],
    old: list[OldVerifyKey],
    fetched_ts: int,
    validity: int = DAY_MS,
) -> dict[str, FetchedKey]:
    resp = build_server_key_response(server, keys, old, now_ms=fetched_ts, validity_ms=validity)
    return parse_server_key_response(resp, server).to_fetched_keys(fetched_ts)


async def test_remote_keys_round_trip(database: Database) -> None:
    store = KeyStore(database)
    k1 = generate_signing_key("k1")
    old = generate_signing_key("k0")
    keys = fetched(
        "peer.test:8448", [k1], [OldVerifyKey("ed25519:k0", get_verify_key(old), NOW - 5)], NOW
    )
    await store.store_server_keys("peer.test:8448", keys)
    got = await store.get_server_keys("peer.test:8448", ["ed25519:k1", "ed25519:k0", "ed25519:x"])
    assert set(got) == {"ed25519:k1", "ed25519:k0"}
    assert got["ed25519:k1"] == keys["ed25519:k1"]
    assert got["ed25519:k0"].expired_ts == NOW - 5
    assert bytes(got["ed25519:k0"].verify_key) == bytes(get_verify_key(old))
    assert got["ed25519:k1"].response_json == keys["ed25519:k1"].response_json
    # The stored response still verifies: it is what we serve as a notary.
    assert got["ed25519:k1"].response_json is not None
    parse_server_key_response(dict(got["ed25519:k1"].response_json), "peer.test:8448")
    assert set(await store.get_server_keys("peer.test:8448")) == {"ed25519:k1", "ed25519:k0"}
    assert await store.get_server_keys("other.test") == {}
    assert await store.get_server_keys("peer.test:8448", []) == {}


async def test_newer_fetch_wins_older_does_not(database: Database) -> None:
    store = KeyStore(database)
    k1 = generate_signing_key("k1")
    first = fetched("peer.test", [k1], [], NOW)
    await store.store_server_keys("peer.test", first)
    later = fetched("peer.test", [k1], [], NOW + 1000)
    await store.store_server_keys("peer.test", later)
    assert (await store.get_server_keys("peer.test"))["ed25519:k1"].fetched_ts == NOW + 1000
    await store.store_server_keys("peer.test", first)  # a slow, older answer arrives late
    assert (await store.get_server_keys("peer.test"))["ed25519:k1"].fetched_ts == NOW + 1000
    # Rotation: k1 becomes old in the newer response.
    k2 = generate_signing_key("k2")
    rotated = fetched(
        "peer.test", [k2], [OldVerifyKey("ed25519:k1", get_verify_key(k1), NOW + 1500)], NOW + 2000
    )
    await store.store_server_keys("peer.test", rotated)
    got = await store.get_server_keys("peer.test")
    assert got["ed25519:k1"].expired_ts == NOW + 1500
    assert got["ed25519:k2"].expired_ts is None


async def test_many_key_ids(database: Database) -> None:
    store = KeyStore(database)
    k1 = generate_signing_key("k1")
    await store.store_server_keys("peer.test", fetched("peer.test", [k1], [], NOW))
    ids = [f"ed25519:x{i}" for i in range(1200)] + ["ed25519:k1"]
    assert set(await store.get_server_keys("peer.test", ids)) == {"ed25519:k1"}


async def test_keyring_over_the_store(database: Database) -> None:
    """The keyring's cache survives a new Keyring (a restart)."""
    clock = FakeClock(NOW)
    peer_key = generate_signing_key("k1")
    calls = []

    class Http:
        async def get_json(
            self, destination: str, path: str, *, timeout_s: float | None = None
        ) -> object:
            calls.append(destination)
            return build_server_key_response(
                destination, [peer_key], [], now_ms=clock.time_ms(), validity_ms=DAY_MS
            )

        async def post_json(
            self, destination: str, path: str, body: object, *, timeout_s: float | None = None
        ) -> object:
            raise AssertionError("no notary configured")

    http = Http()
    k1 = Keyring([DirectKeyFetcher(http, clock)], KeyStore(database), clock)
    assert set(await k1.get_verify_keys("peer.test", ["ed25519:k1"], NOW)) == {"ed25519:k1"}
    k2 = Keyring([DirectKeyFetcher(http, clock)], KeyStore(database), clock)
    assert set(await k2.get_verify_keys("peer.test", ["ed25519:k1"], NOW)) == {"ed25519:k1"}
    assert calls == ["peer.test"]


async def test_local_keys_rotation_survives_restart(database: Database) -> None:
    store = KeyStore(database)
    a = generate_signing_key("a")
    b = generate_signing_key("b")
    assert await store.sync_local_keys("me.test", {"ed25519:a": get_verify_key(a)}, [], NOW) == []
    # Same key again on the next start: nothing changes.
    assert (
        await store.sync_local_keys("me.test", {"ed25519:a": get_verify_key(a)}, [], NOW + 10) == []
    )
    # The key file now holds b: a is retired at this start.
    old = await store.sync_local_keys("me.test", {"ed25519:b": get_verify_key(b)}, [], NOW + 100)
    assert [(o.key_id, o.expired_ts) for o in old] == [("ed25519:a", NOW + 100)]
    assert bytes(old[0].verify_key) == bytes(get_verify_key(a))
    # And again after another restart, without any config for it.
    store2 = KeyStore(database)
    old = await store2.sync_local_keys("me.test", {"ed25519:b": get_verify_key(b)}, [], NOW + 200)
    assert [(o.key_id, o.expired_ts) for o in old] == [("ed25519:a", NOW + 100)]
    # Other tenants are separate.
    assert await store2.sync_local_keys("you.test", {"ed25519:a": get_verify_key(b)}, [], NOW) == []
    locals_ = await store2.get_local_keys("me.test")
    assert [(k.key_id, k.created_ts, k.expired_ts) for k in locals_] == [
        ("ed25519:a", NOW, NOW + 100),
        ("ed25519:b", NOW + 100, None),
    ]


async def test_local_keys_from_config_and_reuse_refused(database: Database) -> None:
    store = KeyStore(database)
    a = generate_signing_key("a")
    legacy = generate_signing_key("legacy")
    cfg = [OldVerifyKey("ed25519:legacy", get_verify_key(legacy), NOW - 50)]
    old = await store.sync_local_keys("me.test", {"ed25519:a": get_verify_key(a)}, cfg, NOW)
    assert [(o.key_id, o.expired_ts) for o in old] == [("ed25519:legacy", NOW - 50)]
    other = generate_signing_key("a")
    with pytest.raises(ValueError, match="new ID"):
        await store.sync_local_keys("me.test", {"ed25519:a": get_verify_key(other)}, [], NOW + 1)
    # Nothing was changed by the refused call.
    assert [k.expired_ts for k in await store.get_local_keys("me.test")] == [NOW - 50, None]
    bad_cfg = [OldVerifyKey("ed25519:legacy", get_verify_key(other), NOW - 50)]
    with pytest.raises(ValueError, match="differs"):
        await store.sync_local_keys("me.test", {"ed25519:a": get_verify_key(a)}, bad_cfg, NOW + 1)
