"""Named queries for task logs: insert a batch, read a task's records in id order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.record import record
from broker.store.prepared import BatchWrite
from broker.store.schema import task_log

_INSERT = BatchWrite(task_log.insert(), ("task_id", "attempt", "at_us", "level", "message"))


@record
class StoredLog:
    id: int
    attempt: int
    at_us: int
    level: int
    message: str


async def insert(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows of (task_id, attempt, at_us, level, message), in one statement per batch."""
    await _INSERT.run(conn, rows)


async def page(
    conn: AsyncConnection, task_id: str, *, attempt: int | None, after_id: int, limit: int
) -> list[StoredLog]:
    """Up to `limit` records of a task (of one attempt) after `after_id`, oldest first."""
    query = (
        sa.select(
            task_log.c.id,
            task_log.c.attempt,
            task_log.c.at_us,
            task_log.c.level,
            task_log.c.message,
        )
        .where(task_log.c.task_id == task_id, task_log.c.id > after_id)
        .order_by(task_log.c.id)
        .limit(limit)
    )
    if attempt is not None:
        query = query.where(task_log.c.attempt == attempt)
    return [StoredLog(*row) for row in await conn.execute(query)]
