"""A peer's health history keeps the order of its state changes, even when
several happen within one millisecond (a probe, then the outbox reporting a
failed delivery, on the same clock tick)."""

from __future__ import annotations

from storage.database import Database
from storage.stores.discovery import DiscoveryStore


async def test_history_order_within_one_millisecond(database: Database) -> None:
    store = DiscoveryStore(database)
    await store.ensure_peer("b.test", 1)
    await store.ensure_peer("c.test", 1)
    changes = ["online", "degraded", "online", "degraded", "offline"]
    for i, state in enumerate(changes):
        assert await store.set_state("b.test", state, f"change {i}", 1000)
        assert await store.set_state("c.test", state, f"c {i}", 1000)
    # Setting the same state again changes its reason, not the history.
    assert not await store.set_state("b.test", "offline", "still down", 1000)
    history = await store.history("b.test")
    assert [(ts, state, reason) for ts, state, reason in history] == [
        (1000, state, f"change {i}") for i, state in reversed(list(enumerate(changes)))
    ]
    assert (await store.get_peer("b.test")).state_reason == "still down"  # type: ignore[union-attr]
    assert [s for _, s, _ in await store.history("b.test", limit=2)] == ["offline", "degraded"]
    assert [r for _, _, r in await store.history("c.test")][0] == "c 4"  # numbered per peer
    # Later changes still come first after the old ones are pruned.
    await store.set_state("b.test", "online", "back", 2000)
    await store.prune_history(2000)
    await store.set_state("b.test", "degraded", "slow", 2000)
    assert [s for _, s, _ in await store.history("b.test")] == ["degraded", "online"]
