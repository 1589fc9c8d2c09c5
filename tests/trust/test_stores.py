"""The trust-domain override store and the key-rotation store, on both
engines (the ``database`` fixture: SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from signedjson.key import generate_signing_key, get_verify_key

from federation.server_keys import key_id_of
from storage.database import Database
from storage.stores.key_rotation import KeyRotationStore
from storage.stores.trust import NODE_SCOPE, TrustOverride, TrustOverrideStore


async def test_trust_overrides_set_replace_and_delete(database: Database) -> None:
    store = TrustOverrideStore(database)
    assert await store.get_all() == {}
    await store.set(NODE_SCOPE, ("b.test", "*.friends.test"), 10)
    await store.set("t.test", None, 11)  # the tenant follows the node-wide setting
    assert await store.get_all() == {
        NODE_SCOPE: TrustOverride(NODE_SCOPE, ("b.test", "*.friends.test"), 10),
        "t.test": TrustOverride("t.test", None, 11),
    }
    # Upsert: one row per scope, the latest wins; an empty list is "nobody".
    await store.set(NODE_SCOPE, (), 12)
    await store.set("t.test", ("c.test",), 13)
    assert await store.get_all() == {
        NODE_SCOPE: TrustOverride(NODE_SCOPE, (), 12),
        "t.test": TrustOverride("t.test", ("c.test",), 13),
    }
    assert await database.fetchval("SELECT COUNT(*) FROM trusted_servers_overrides") == 2
    assert await store.delete("t.test") is True
    assert await store.delete("t.test") is False
    assert await store.delete("never.test") is False
    assert list(await store.get_all()) == [NODE_SCOPE]


async def test_key_rotation_rotate_revoke_and_states(database: Database) -> None:
    store = KeyRotationStore(database)
    k1, k2, k3 = (generate_signing_key(v) for v in ("k1", "k2", "k3"))
    id1, id2, id3 = (key_id_of(k) for k in (k1, k2, k3))
    assert await store.get_keys("a.test") == []

    # A first rotation on a node that never recorded its key records it first.
    await store.rotate("a.test", {id1: get_verify_key(k1)}, id2, get_verify_key(k2),
                       now_ms=1_000, expired_ts=5_000)
    keys = await store.get_keys("a.test")
    assert [(k.key_id, k.state, k.expired_ts) for k in keys] == [
        (id1, "old", 5_000), (id2, "current", None)]
    assert keys[1].verify_key.encode() == get_verify_key(k2).encode()
    assert await store.get_keys("b.test") == []  # per hosted name

    # A second rotation leaves the first key's expiry alone.
    await store.rotate("a.test", {id2: get_verify_key(k2)}, id3, get_verify_key(k3),
                       now_ms=2_000, expired_ts=9_000)
    states = {k.key_id: (k.state, k.expired_ts) for k in await store.get_keys("a.test")}
    assert states == {id1: ("old", 5_000), id2: ("old", 9_000), id3: ("current", None)}
    # A key ID is never reused, and a failed rotation changes nothing.
    with pytest.raises(ValueError, match="was used before"):
        await store.rotate("a.test", {id3: get_verify_key(k3)}, id1, get_verify_key(k1),
                           now_ms=3_000, expired_ts=10_000)
    assert {k.key_id: (k.state, k.expired_ts)
            for k in await store.get_keys("a.test")} == states

    # Revocation: an old key keeps its expiry; the current one expires now.
    assert await store.revoke("a.test", id1, 4_000) is True
    assert await store.revoke("a.test", id1, 4_500) is False  # already revoked
    assert await store.revoke("a.test", "ed25519:nope", 4_500) is False
    assert await store.revoke("b.test", id2, 4_500) is False  # not b's key
    assert await store.revoke("a.test", id3, 6_000) is True
    got = {k.key_id: k for k in await store.get_keys("a.test")}
    assert (got[id1].state, got[id1].expired_ts, got[id1].revoked_ts) == ("revoked", 5_000, 4_000)
    assert (got[id3].state, got[id3].expired_ts, got[id3].revoked_ts) == ("revoked", 6_000, 6_000)
    assert got[id2].state == "old"
    assert await store.revoked_ids("a.test", [id1, id2, id3, "ed25519:x"]) == {id1, id3}
    assert await store.revoked_ids("b.test", [id1]) == set()
