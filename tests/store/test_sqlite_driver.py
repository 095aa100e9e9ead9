"""Write-behind on SQLite: a deferred write's error fails its transaction, and only it.

These are the contract callers of `DEFERRED` rely on, so they hold on both
SQLite dialects: on the fast path the error surfaces at the next awaited
statement, on the stock dialect (TASKYARD_SQLITE_DRIVER=stock) at the write.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from broker.store.database import Database
from broker.store.sqlite_driver import DEFERRED, DRIVER, STOCK, requested_mode

pytestmark = pytest.mark.sqlite_only

INSERT = sa.text("INSERT INTO maintenance (name, ran_at) VALUES (:name, :ran_at)")
NAMES = sa.text("SELECT name FROM maintenance ORDER BY name")


async def names(db: Database) -> list[str]:
    async with db.reader.connect() as conn:
        return [r[0] for r in await conn.execute(NAMES)]


async def test_the_database_uses_the_driver_the_switch_asks_for(db: Database) -> None:
    # Unset (auto), the fast path passes its self-check on the locked versions.
    want = STOCK if requested_mode() == "stock" else DRIVER
    assert (db.writer.dialect.driver, db.reader.dialect.driver) == (want, want)


async def test_deferred_writes_are_seen_by_the_next_read_in_order(db: Database) -> None:
    async with db.writer.begin() as conn:
        for name in ("b", "a", "c"):
            await conn.execute(INSERT, {"name": name, "ran_at": 1}, execution_options=DEFERRED)
        assert [r[0] for r in await conn.execute(NAMES)] == ["a", "b", "c"]
    assert await names(db) == ["a", "b", "c"]


async def test_a_failed_deferred_write_fails_the_next_read_and_skips_later_writes(
    db: Database,
) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(INSERT, {"name": "kept", "ran_at": 1})
    async with db.writer.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
            await conn.execute(INSERT, {"name": "x", "ran_at": 1}, execution_options=DEFERRED)
            await conn.execute(INSERT, {"name": "kept", "ran_at": 2}, execution_options=DEFERRED)
            await conn.execute(INSERT, {"name": "y", "ran_at": 1}, execution_options=DEFERRED)
            await conn.execute(NAMES)
        await conn.rollback()
        # The connection is clean again: the error is not raised twice.
        await conn.execute(INSERT, {"name": "z", "ran_at": 1}, execution_options=DEFERRED)
        await conn.commit()
    assert await names(db) == ["kept", "z"]


async def test_a_failed_deferred_write_fails_the_commit(db: Database) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(INSERT, {"name": "kept", "ran_at": 1})
    with pytest.raises(sa.exc.IntegrityError):
        async with db.writer.begin() as conn:
            await conn.execute(INSERT, {"name": "x", "ran_at": 1}, execution_options=DEFERRED)
            await conn.execute(INSERT, {"name": "kept", "ran_at": 2}, execution_options=DEFERRED)
    assert await names(db) == ["kept"]
