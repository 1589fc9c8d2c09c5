"""The keyring and the trust domain, and across a peer's key rotation:
keys of servers outside the domain are never fetched, notaries outside it are
never asked, a new key ID triggers a re-fetch, and an old key verifies only
what was signed before its expired_ts."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from signedjson.key import generate_signing_key
from signedjson.types import SigningKey

from federation.clock import FakeClock
from federation.keyring import (
    DirectKeyFetcher,
    Keyring,
    MemoryKeyCache,
    NotaryKeyFetcher,
    NotarySpec,
    UnknownKeyError,
)
from federation.server_keys import (
    OldVerifyKey,
    build_server_key_response,
    key_id_of,
    verify_key_of,
)
from federation.signing import sign_json
from federation.trust import TrustPolicy

DAY = 86_400_000


class FakePeer:
    """A KeyHttpClient that answers like ``server`` would, and logs who was asked."""

    def __init__(self, server: str, clock: FakeClock) -> None:
        self.server = server
        self.clock = clock
        self.keys: list[SigningKey] = [generate_signing_key("k1")]
        self.old: list[OldVerifyKey] = []
        self.asked: list[tuple[str, str]] = []

    def response(self) -> dict[str, Any]:
        return build_server_key_response(self.server, self.keys, self.old,
                                         now_ms=self.clock.time_ms(), validity_ms=DAY)

    def rotate(self, expired_ts: int) -> None:
        old = self.keys[0]
        self.old.append(OldVerifyKey(key_id_of(old), verify_key_of(old), expired_ts))
        self.keys = [generate_signing_key(f"k{len(self.old) + 1}")]

    async def get_json(self, destination: str, path: str, *, timeout_s: float | None = None
                       ) -> Any:
        self.asked.append((destination, path))
        return self.response()

    async def post_json(self, destination: str, path: str, body: Any, *,
                        timeout_s: float | None = None) -> Any:
        self.asked.append((destination, path))
        return {"server_keys": []}


def signed(peer: FakePeer, ts: int, key: SigningKey | None = None) -> dict[str, Any]:
    return sign_json({"ts": ts}, peer.server, key or peer.keys[0])


async def test_new_key_id_refetches_and_old_keys_stop_at_expired_ts() -> None:
    clock = FakeClock()
    peer = FakePeer("p.test", clock)
    keyring = Keyring([DirectKeyFetcher(peer, clock)], MemoryKeyCache(), clock)
    t0 = clock.time_ms()
    before = signed(peer, t0)
    await keyring.verify_json_for_server(before, "p.test", t0)
    assert len(peer.asked) == 1
    old_key = peer.keys[0]

    clock.advance(60)
    rotated_at = clock.time_ms()
    peer.rotate(expired_ts=rotated_at + 3_600_000)
    after = signed(peer, rotated_at)
    # The new key ID is unknown: fetched again, no manual step.
    await keyring.verify_json_for_server(after, "p.test", rotated_at)
    assert len(peer.asked) == 2
    # What the old key signed before its expired_ts still verifies...
    await keyring.verify_json_for_server(before, "p.test", t0)
    late_but_in_overlap = signed(peer, rotated_at + 1000, old_key)
    await keyring.verify_json_for_server(late_but_in_overlap, "p.test", rotated_at + 1000)
    # ...and nothing it signed at or after expired_ts, nor any request.
    too_late = rotated_at + 3_600_000
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(signed(peer, too_late, old_key), "p.test", too_late)
    with pytest.raises(UnknownKeyError):
        await keyring.verify_json_for_server(before, "p.test", t0, allow_old=False)


async def test_untrusted_servers_and_notaries_are_never_asked() -> None:
    clock = FakeClock()
    peer = FakePeer("p.test", clock)
    notary_key = generate_signing_key("n1")
    untrusted_notary = NotaryKeyFetcher(
        peer, clock, NotarySpec("notary.evil", {key_id_of(notary_key): verify_key_of(notary_key)})
    )
    trusted_notary = NotaryKeyFetcher(
        peer, clock, NotarySpec("notary.ok", {key_id_of(notary_key): verify_key_of(notary_key)})
    )

    class Failing(DirectKeyFetcher):
        async def fetch(self, server_name: str, key_ids: Collection[str],
                        minimum_valid_until_ts: int) -> dict[str, Any]:
            peer.asked.append((server_name, "direct (down)"))
            raise OSError("down")

    keyring = Keyring([Failing(peer, clock), untrusted_notary, trusted_notary],
                      MemoryKeyCache(), clock)
    policy = TrustPolicy.from_patterns(["p.test", "notary.ok"])
    keyring.server_filter = policy.allows
    assert await keyring.get_verify_keys("p.test", ["ed25519:zz"], clock.time_ms()) == {}
    destinations = [d for d, _ in peer.asked]
    assert "notary.ok" in destinations and "notary.evil" not in destinations
    # A server outside the domain: nothing asked at all, nothing found.
    peer.asked.clear()
    assert await keyring.get_verify_keys("evil.test", ["ed25519:k1"], clock.time_ms()) == {}
    assert peer.asked == []
    assert await keyring.get_responses_for_notary("evil.test", [], 0) == []
    assert peer.asked == []
