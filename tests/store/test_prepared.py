"""Batched writes from tuples: the same rows land whichever path the backend takes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from broker.store.database import Database
from broker.store.prepared import BatchWrite
from broker.store.schema import task_attempt

ATTEMPT = BatchWrite(
    task_attempt.insert(),
    # Not the table's column order: the tuples follow `names`, whatever SQL the dialect makes.
    ("outcome", "task_id", "attempt", "ended_at", "worker_id", "error_message"),
)


async def rows(db: Database) -> list[tuple[object, ...]]:
    async with db.reader.connect() as conn:
        result = await conn.execute(
            sa.select(
                task_attempt.c.task_id,
                task_attempt.c.attempt,
                task_attempt.c.outcome,
                task_attempt.c.ended_at,
                task_attempt.c.worker_id,
                task_attempt.c.error_message,
                task_attempt.c.error_type,
            ).order_by(task_attempt.c.task_id, task_attempt.c.attempt)
        )
        return [tuple(r) for r in result]


@pytest.mark.parametrize("defer", [True, False])
async def test_rows_are_written_column_by_name(db: Database, defer: bool) -> None:
    async with db.writer.begin() as conn:
        await ATTEMPT.run(
            conn,
            [(2, "t1", 1, 100, "w1", "boom"), (1, "t2", 3, 200, None, None)],
            defer=defer,
        )
    assert await rows(db) == [
        ("t1", 1, 2, 100, "w1", "boom", None),
        ("t2", 3, 1, 200, None, None, None),
    ]


async def test_a_failing_batch_writes_nothing(db: Database) -> None:
    async with db.writer.begin() as conn:
        await ATTEMPT.run(conn, [(1, "t1", 1, 100, None, None)])
    with pytest.raises(sa.exc.IntegrityError):
        async with db.writer.begin() as conn:
            # The second row repeats the first one's key; the deferred write fails at commit.
            await ATTEMPT.run(conn, [(1, "t3", 1, 100, None, None), (1, "t1", 1, 100, None, None)])
    assert [r[0] for r in await rows(db)] == ["t1"]


async def test_an_empty_batch_is_a_no_op(db: Database) -> None:
    async with db.writer.begin() as conn:
        await ATTEMPT.run(conn, [])
    assert await rows(db) == []


@pytest.mark.sqlite_only  # only the SQLite path compiles the statement to driver SQL
async def test_a_constant_bound_in_the_statement_is_refused(db: Database) -> None:
    """A bound constant would be silently dropped from the driver's tuples."""
    write = BatchWrite(task_attempt.insert().values(outcome=1), ("task_id", "attempt", "ended_at"))
    async with db.writer.connect() as conn:
        with pytest.raises(ValueError, match="outcome"):
            await write.run(conn, [("t1", 1, 100)])
