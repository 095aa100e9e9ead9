"""Write-behind on SQLite: a deferred write's error fails its transaction, and only it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from broker.store.database import Database
from broker.store.sqlite_driver import DEFERRED

pytestmark = pytest.mark.sqlite_only

INSERT = sa.text("INSERT INTO maintenance (name, ran_at) VALUES (:name, :ran_at)")
NAMES = sa.text("SELECT name FROM maintenance ORDER BY name")


async def names(db: Database) -> list[str]:
    async with db.reader.connect() as conn:
        return [r[0] for r in await conn.execute(NAMES)]


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
        await conn.execute(INSERT, {"name": "x", "ran_at": 1}, execution_options=DEFERRED)
        await conn.execute(INSERT, {"name": "kept", "ran_at": 2}, execution_options=DEFERRED)
        await conn.execute(INSERT, {"name": "y", "ran_at": 1}, execution_options=DEFERRED)
        with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
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
