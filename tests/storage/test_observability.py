"""Every query is timed; slow ones are logged with their transaction's name."""

from __future__ import annotations

import logging

import pytest

from federation.clock import FakeClock
from storage.database import SLOW_QUERY_SECONDS, Database


class SlowClock(FakeClock):
    """Each reading of the monotonic clock is 2 s after the previous one, so
    every query looks slow without anything waiting."""

    def monotonic(self) -> float:
        self.advance(2 * SLOW_QUERY_SECONDS)
        return super().monotonic()


async def test_slow_queries_are_logged_with_their_transaction(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(database_url, clock=SlowClock())
    try:
        with caplog.at_level(logging.WARNING, logger="storage.database"):
            await db.fetch("SELECT 1 AS outside")
            async with db.transaction("named_for_the_log") as txn:
                await txn.fetch("SELECT 2 AS inside")
    finally:
        await db.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Slow query" in m and "SELECT 1 AS outside" in m for m in messages)
    assert any(
        "Slow query in named_for_the_log" in m and "SELECT 2 AS inside" in m for m in messages
    )
    assert any("Slow transaction named_for_the_log" in m for m in messages)


async def test_fast_queries_are_not_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(database_url, clock=FakeClock())
    try:
        with caplog.at_level(logging.WARNING, logger="storage.database"):
            await db.fetch("SELECT 1")
            async with db.transaction("quick") as txn:
                await txn.fetch("SELECT 2")
    finally:
        await db.close()
    assert caplog.records == []
