"""The two columns authorization needs of a task: who created it and in which queue."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.schema import task


@dataclass(frozen=True, slots=True)
class TaskScope:
    owner: str | None
    queue: str


async def task_scope(conn: AsyncConnection, task_id: str) -> TaskScope | None:
    row = (
        await conn.execute(sa.select(task.c.owner, task.c.queue).where(task.c.id == task_id))
    ).first()
    return None if row is None else TaskScope(row.owner, row.queue)
