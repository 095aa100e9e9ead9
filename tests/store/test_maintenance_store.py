"""Leaderless ticks: whichever replica wins the compare-and-set runs the duty, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from broker.store import maintenance
from broker.store.database import Database, ensure_schema, open_database


@pytest.fixture
async def databases(db_url: str, backend: str) -> AsyncIterator[list[Database]]:
    """Two handles on one database, as two replicas would have (one on SQLite)."""
    first = open_database(db_url)
    await ensure_schema(first, auto_migrate=False)
    handles = [first]
    if backend == "postgresql":
        handles.append(open_database(db_url))
    try:
        yield handles
    finally:
        for handle in handles:
            await handle.dispose()


async def claim(db: Database, now: int) -> bool:
    async with db.writer.begin() as conn:
        return await maintenance.claim_tick(conn, name="reaper", now=now, interval_us=1000)


async def test_a_tick_is_won_once_per_interval(databases: list[Database]) -> None:
    db = databases[0]
    assert await claim(db, now=10_000)  # first ever: the row is created
    assert not await claim(db, now=10_500)  # within the interval
    assert await claim(db, now=11_000)  # the interval has passed
    assert not await claim(db, now=11_000)


async def test_replicas_racing_for_a_tick_let_exactly_one_win(databases: list[Database]) -> None:
    contenders = [databases[i % len(databases)] for i in range(6)]
    await claim(contenders[0], now=0)
    for now in (5_000, 10_000, 15_000):
        wins = await asyncio.gather(*(claim(db, now) for db in contenders))
        assert sum(wins) == 1, wins
