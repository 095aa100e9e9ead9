"""Named queries for time-driven and operator moves: promotion, expiry, retry, purge.

Each works in bounded batches so that no transaction grows with the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import TaskRecord
from broker.core.task_state import TERMINAL, WAITING, TaskState, sources_of
from broker.store.dialect import insert, is_pg
from broker.store.schema import (
    OWNED_KEY,
    OWNERLESS_KEY,
    state_is,
    task,
    task_attempt,
    task_log,
    task_payload,
    task_result,
)
from broker.store.schema import maintenance as maintenance_table
from broker.store.tasks import _last_attempt, _record

_S = TaskState


@dataclass(frozen=True, slots=True)
class Moved:
    """A task a sweep moved, with where it came from."""

    task_id: str
    queue: str
    type: str
    source: TaskState
    attempt: int = 0
    workflow_id: str | None = None


async def _select_moving(
    conn: AsyncConnection, where: sa.ColumnElement[bool], order: sa.ColumnElement[int], limit: int
) -> list[Moved]:
    columns = (task.c.id, task.c.queue, task.c.type, task.c.state, task.c.attempt)
    query = sa.select(*columns, task.c.workflow_id).where(where).order_by(order).limit(limit)
    if is_pg(conn):
        query = query.with_for_update(skip_locked=True)
    return [
        Moved(r.id, r.queue, r.type, _S(r.state), r.attempt, r.workflow_id)
        for r in await conn.execute(query)
    ]


async def promote_due(conn: AsyncConnection, *, now: int, limit: int) -> list[Moved]:
    """Move SCHEDULED and RETRYING tasks whose time has come to PENDING."""
    waiting = sorted(sources_of(_S.PENDING) & WAITING)
    due = await _select_moving(
        conn,
        sa.and_(state_is(*waiting, column=task.c.state), task.c.run_at <= now),
        task.c.run_at,
        limit,
    )
    if due:
        await conn.execute(
            sa.update(task)
            .where(task.c.id.in_([m.task_id for m in due]), state_is(*waiting, column=task.c.state))
            .values(state=int(_S.PENDING), updated_at=now)
        )
    return due


async def next_due(conn: AsyncConnection) -> int | None:
    """The earliest run_at among tasks waiting for a time, or None."""
    value = await conn.scalar(
        sa.select(sa.func.min(task.c.run_at)).where(
            state_is(_S.SCHEDULED, _S.RETRYING, column=task.c.state)
        )
    )
    return None if value is None else int(value)


async def expire_tasks(conn: AsyncConnection, *, now: int, limit: int) -> list[Moved]:
    """Waiting tasks not started by their expiry become EXPIRED."""
    due = await _select_moving(
        conn,
        sa.and_(sa.text("state IN (1, 2, 4) AND expire_at IS NOT NULL"), task.c.expire_at <= now),
        task.c.expire_at,
        limit,
    )
    if not due:
        return []
    await conn.execute(
        sa.update(task)
        .where(
            task.c.id.in_([m.task_id for m in due]),
            task.c.state.in_([int(s) for s in WAITING]),
        )
        .values(
            state=int(_S.EXPIRED),
            lapsed_lease_id=None,
            finished_at=now,
            updated_at=now,
            error_type="Expired",
            error_message="not started before its expiry",
            error_details="",
            error_non_retryable=True,
            error_attempt=task.c.attempt,
        )
    )
    return due


RETRYABLE = frozenset({_S.FAILED, _S.DEAD, _S.CANCELLED, _S.EXPIRED})


@dataclass(frozen=True, slots=True)
class Retried:
    task_id: str
    queue: str
    source: TaskState
    type: str = ""
    attempt: int = 0


async def retry_tasks(
    conn: AsyncConnection, records: Sequence[TaskRecord], *, now: int
) -> list[Retried]:
    """Re-queue finished tasks with a fresh budget; the final attempt goes into history."""
    eligible = [r for r in records if r.state in RETRYABLE]
    ran = [r for r in eligible if r.attempt > 0]
    if ran:
        recorded = {
            (row.task_id, row.attempt)
            for row in await conn.execute(
                sa.select(task_attempt.c.task_id, task_attempt.c.attempt).where(
                    task_attempt.c.task_id.in_([r.id for r in ran])
                )
            )
        }
        history = [_attempt_params(r) for r in ran if (r.id, r.attempt) not in recorded]
        if history:
            await conn.execute(task_attempt.insert(), history)
    out = []
    for r in eligible:
        result = await conn.execute(
            sa.update(task)
            .where(task.c.id == r.id, task.c.state == int(r.state))
            .values(
                state=int(_S.PENDING),
                finished_at=None,
                cancel_requested=False,
                cancel_reason=None,
                lapsed_lease_id=None,
                attempt_base=task.c.attempt,
                lost_count=0,
                run_at=now,
                expire_at=None,
                updated_at=now,
            )
        )
        if result.rowcount:
            out.append(Retried(r.id, r.queue, r.state, r.type, r.attempt))
    return out


def _attempt_params(record: TaskRecord) -> dict[str, object]:
    attempt = _last_attempt(record)
    error = attempt.error
    return {
        "task_id": record.id,
        "attempt": attempt.attempt,
        "worker_id": attempt.worker_id,
        "started_at": attempt.started_at,
        "ended_at": attempt.ended_at or record.updated_at,
        "outcome": attempt.outcome.value,
        "error_type": error.type if error else None,
        "error_message": error.message if error else None,
        "error_details": error.details if error else None,
    }


async def finished_records(
    conn: AsyncConnection, *, queue: str, states: Collection[TaskState], limit: int
) -> list[TaskRecord]:
    rows = await conn.execute(
        sa.select(task)
        .where(
            task.c.queue == queue,
            task.c.state.in_([int(s) for s in states]),
            task.c.workflow_id.is_(None),  # nodes are retried with their workflow
        )
        .order_by(task.c.id)
        .limit(limit)
    )
    return [_record(r) for r in rows]


async def purge(
    conn: AsyncConnection,
    *,
    finished_before: int,
    states: Collection[TaskState] = TERMINAL,
    queue: str | None = None,
    exclude_queues: Collection[str] = (),
    limit: int,
) -> Counter[tuple[str, TaskState]]:
    """Delete up to `limit` finished tasks and everything stored with them.

    Returns how many were deleted per (queue, state).
    """
    query = (
        sa.select(task.c.id, task.c.queue, task.c.state)
        .where(
            sa.text("finished_at IS NOT NULL"),
            task.c.finished_at < finished_before,
            task.c.state.in_([int(s) for s in states]),
            # Nodes go with their workflow (store.workflow_reads.purge_workflows).
            task.c.workflow_id.is_(None),
        )
        .order_by(task.c.finished_at)
        .limit(limit)
    )
    if queue is not None:
        query = query.where(task.c.queue == queue)
    if exclude_queues:
        query = query.where(task.c.queue.not_in(list(exclude_queues)))
    rows = list(await conn.execute(query))
    deleted: Counter[tuple[str, TaskState]] = Counter((r.queue, _S(r.state)) for r in rows)
    ids = [r.id for r in rows]
    if not ids:
        return deleted
    for table, column in (
        (task_payload, task_payload.c.task_id),
        (task_result, task_result.c.task_id),
        (task_attempt, task_attempt.c.task_id),
        (task_log, task_log.c.task_id),
    ):
        await conn.execute(sa.delete(table).where(column.in_(ids)))
    await conn.execute(sa.delete(task).where(task.c.id.in_(ids)))
    return deleted


async def forget_request_ids(conn: AsyncConnection, *, created_before: int, limit: int) -> int:
    """Release idempotency keys older than their retention, in a bounded batch.

    One statement per namespace (owned, ownerless), each spelled as its
    partial index is so that the index can serve it.
    """
    forgotten = 0
    for namespace in (OWNED_KEY, OWNERLESS_KEY):
        old = (
            sa.select(task.c.id)
            .where(sa.text(namespace), task.c.created_at < created_before)
            .limit(limit - forgotten)
        )
        result = await conn.execute(
            sa.update(task).where(task.c.id.in_(old.scalar_subquery())).values(request_id=None)
        )
        forgotten += int(result.rowcount or 0)
        if forgotten >= limit:
            break
    return forgotten


async def grant_restart_grace(conn: AsyncConnection, *, until: int) -> int:
    """Let leases from before a restart live until `until`, so their workers can re-adopt them."""
    result = await conn.execute(
        sa.update(task)
        .where(state_is(_S.RUNNING, column=task.c.state), task.c.lease_expires_at < until)
        .values(lease_expires_at=until)
    )
    return int(result.rowcount or 0)


async def claim_tick(conn: AsyncConnection, *, name: str, now: int, interval_us: int) -> bool:
    """Win this duty's tick if nobody ran it within the interval (leaderless, any replica)."""
    won = await conn.execute(
        sa.update(maintenance_table)
        .where(maintenance_table.c.name == name, maintenance_table.c.ran_at <= now - interval_us)
        .values(ran_at=now)
    )
    if won.rowcount:
        return True
    created = await conn.execute(
        insert(maintenance_table, pg=is_pg(conn))
        .values(name=name, ran_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return bool(created.rowcount)
