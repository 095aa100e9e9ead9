"""Batched writes from tuples: the same rows land whichever path the backend takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.database import Database
from broker.store.prepared import (
    ROWS_PER_STATEMENT,
    BatchWrite,
    multi_row_insert,
    multi_row_update,
    unnest_insert,
    unnest_update,
)
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


# --- Many rows a statement (SQLite): the same rows as one row a statement --------------------

_BY_KEY: tuple[sa.BindParameter[str], sa.BindParameter[int]] = (
    sa.bindparam("b_task"),
    sa.bindparam("b_attempt"),
)
ENDED = BatchWrite(
    sa.update(task_attempt)
    .where(task_attempt.c.task_id == _BY_KEY[0], task_attempt.c.attempt == _BY_KEY[1])
    .where(
        task_attempt.c.outcome == sa.literal_column("1")
    )  # a fence: rows already past it are left alone
    .values(
        outcome=sa.bindparam("b_outcome"), ended_at=task_attempt.c.ended_at + sa.literal_column("1")
    ),
    ("b_outcome", "b_task", "b_attempt"),
    distinct_targets=True,
)
BUMPED = BatchWrite(
    sa.update(task_attempt)
    .where(task_attempt.c.task_id == _BY_KEY[0], task_attempt.c.attempt == _BY_KEY[1])
    .values(ended_at=task_attempt.c.ended_at + sa.bindparam("b_by")),
    ("b_by", "b_task", "b_attempt"),
)


def attempt_rows(n: int) -> list[tuple[object, ...]]:
    return [(1, f"t{i:04}", 1, i, None, None) for i in range(n)]


@pytest.mark.parametrize(
    "n", [1, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, 2 * ROWS_PER_STATEMENT + 21]
)
async def test_every_row_of_a_batch_lands_whatever_its_size(db: Database, n: int) -> None:
    async with db.writer.begin() as conn:
        await ATTEMPT.run(conn, attempt_rows(n))
    assert await rows(db) == [(f"t{i:04}", 1, 1, i, None, None, None) for i in range(n)]


@pytest.mark.parametrize("n", [1, ROWS_PER_STATEMENT, 2 * ROWS_PER_STATEMENT + 21])
async def test_an_update_gives_each_row_its_own_values_and_keeps_its_fence(
    db: Database, n: int
) -> None:
    async with db.writer.begin() as conn:
        await ATTEMPT.run(conn, attempt_rows(n))
    fenced = {i for i in range(n) if i % 5 == 0}
    async with db.writer.begin() as conn:
        await ENDED.run(conn, [(9, f"t{i:04}", 1) for i in sorted(fenced)])
    async with db.writer.begin() as conn:
        # Every row, each with its own outcome; the fenced ones (outcome 9 now) stay.
        await ENDED.run(conn, [(2 + i % 3, f"t{i:04}", 1) for i in range(n)] + [(7, "gone", 1)])
    expected = [
        (f"t{i:04}", 1, 9 if i in fenced else 2 + i % 3, i + 1, None, None, None) for i in range(n)
    ]
    assert await rows(db) == expected


async def test_an_update_whose_rows_share_a_target_applies_each_in_turn(db: Database) -> None:
    """Without distinct_targets a batch is applied row by row, as executemany does."""
    async with db.writer.begin() as conn:
        await ATTEMPT.run(conn, attempt_rows(3))
    async with db.writer.begin() as conn:
        await BUMPED.run(conn, [(10, "t0001", 1)] * (2 * ROWS_PER_STATEMENT))
    assert [r[3] for r in await rows(db)] == [0, 1 + 20 * ROWS_PER_STATEMENT, 2]


async def test_a_failing_row_inside_a_many_row_statement_writes_nothing(db: Database) -> None:
    batch = attempt_rows(ROWS_PER_STATEMENT + 5)
    batch[10] = batch[3]  # a repeated key in the first statement's rows
    with pytest.raises(sa.exc.IntegrityError):
        async with db.writer.begin() as conn:
            await ATTEMPT.run(conn, batch)
    assert await rows(db) == []


def test_only_statements_that_mean_the_same_with_many_rows_get_that_form() -> None:
    assert multi_row_insert("INSERT INTO t (a, b) VALUES (?, ?)", 2, 3) == (
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)"
    )
    assert multi_row_insert("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING", 1, 3) is None
    assert multi_row_update("UPDATE t SET a=? WHERE t.b = ?", 2, 2) == (
        "UPDATE t SET a=_v.column1 FROM (VALUES (?, ?), (?, ?)) AS _v WHERE t.b = _v.column2"
    )
    assert (
        multi_row_update("UPDATE t SET a=? WHERE b IN (SELECT c FROM u WHERE d = ?)", 2, 2) is None
    )
    assert multi_row_update("UPDATE t SET a='?' WHERE b = ?", 1, 2) is None


# --- One statement a batch (PostgreSQL): rows as arrays -------------------------------------


@contextmanager
def executions(conn: AsyncConnection) -> Iterator[list[tuple[str, bool]]]:
    """Each statement the driver runs inside the block, and whether it ran once per row."""
    seen: list[tuple[str, bool]] = []

    def record(*args: Any) -> None:
        seen.append((str(args[2]).split()[0], bool(args[5])))

    sa.event.listen(conn.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(conn.sync_engine, "before_cursor_execute", record)


@pytest.mark.postgres_only
async def test_on_postgresql_a_batch_runs_once_not_once_per_row(db: Database) -> None:
    """executemany costs PostgreSQL an executor start a row; the arrays cost it one."""
    n = 2 * ROWS_PER_STATEMENT + 21
    async with db.writer.begin() as conn:
        with executions(conn) as seen:
            await ATTEMPT.run(conn, attempt_rows(n))
            await ENDED.run(conn, [(2, f"t{i:04}", 1) for i in range(n)])
            await BUMPED.run(conn, [(10, "t0001", 1)] * 2)
    # Rows sharing a target keep executemany: each must see the one before.
    assert seen == [("INSERT", False), ("UPDATE", False), ("UPDATE", True)]
    assert [r[2:4] for r in await rows(db)][:3] == [(2, 1), (2, 22), (2, 3)]


def test_only_statements_that_mean_the_same_over_arrays_get_that_form() -> None:
    casts = ["$1::VARCHAR", "$2::INTEGER"]
    assert unnest_insert("INSERT INTO t (a, b) VALUES ($1::VARCHAR, $2::INTEGER)", casts) == (
        "INSERT INTO t (a, b) SELECT * FROM unnest($1::VARCHAR[], $2::INTEGER[])"
    )
    assert (
        unnest_insert(
            "INSERT INTO t (a, b) VALUES ($1::VARCHAR, $2::INTEGER) ON CONFLICT (a) DO NOTHING",
            casts,
        )
        is None
    )
    assert unnest_update("UPDATE t SET b=(t.b + $2::INTEGER) WHERE t.a = $1::VARCHAR", casts) == (
        "UPDATE t SET b=(t.b + _v.c2) FROM unnest($1::VARCHAR[], $2::INTEGER[]) AS _v(c1, c2) "
        "WHERE t.a = _v.c1"
    )
    # A parameter the casts do not name (a constant bound in the statement), a subquery,
    # a RETURNING clause: each keeps one execution a row.
    assert unnest_update("UPDATE t SET b=$3 WHERE t.a = $1::VARCHAR", casts) is None
    assert (
        unnest_update(
            "UPDATE t SET b=$2::INTEGER WHERE t.a IN (SELECT a FROM u WHERE c = $1::VARCHAR)",
            casts,
        )
        is None
    )
    assert (
        unnest_update("UPDATE t SET b=$2::INTEGER WHERE t.a = $1::VARCHAR RETURNING t.a", casts)
        is None
    )
