"""Named queries for submitting, reading and cancelling tasks (SQLite and PostgreSQL).

Every write here runs inside a transaction the committer owns; reads run on the
reader pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import (
    Attempt,
    AttemptOutcome,
    Claimed,
    Failure,
    LeaseRef,
    NewTask,
    Progress,
    TaskRecord,
)
from broker.core.options import Timeouts
from broker.core.task_state import WAITING, TaskState
from broker.store.dialect import insert, is_pg
from broker.store.prepared import BatchWrite
from broker.store.schema import task, task_attempt, task_payload, task_result

_S = TaskState


# --- Submission -----------------------------------------------------------------------------


# In the table's column order, which is also the compiled INSERT's: no reordering per row.
_TASK_COLUMNS = (
    "id", "queue", "type", "priority", "state", "attempt", "max_attempts", "lost_count",
    "run_at", "created_at", "updated_at", "started_at", "lease_id", "lease_expires_at",
    "worker_id", "cancel_requested", "request_id", "labels", "retry_policy", "attempt_base",
    "execution_timeout_us", "heartbeat_timeout_us", "soft_timeout_us", "expire_at",
    "deadline_at", "concurrency_key", "trace_context", "owner",
)  # fmt: skip
_INSERT_TASK = BatchWrite(task.insert(), _TASK_COLUMNS)
_INSERT_PAYLOAD = BatchWrite(task_payload.insert(), ("task_id", "data"))
_PENDING = int(_S.PENDING)
_SCHEDULED = int(_S.SCHEDULED)
_RUNNING = int(_S.RUNNING)


def _task_values(t: NewTask, lease: Claimed | None = None) -> tuple[Any, ...]:
    """The row of a new task, in the order of _TASK_COLUMNS.

    With `lease`, the task was handed straight to an idle worker: inserted already leased.
    """
    timeouts = t.timeouts
    expire_at = None if timeouts.expiry_us is None else t.run_at + timeouts.expiry_us
    if lease is None:
        state, attempt = (_SCHEDULED if t.run_at > t.created_at else _PENDING), 0
        started = lease_id = expires = worker = deadline = None
    else:
        state, attempt = _RUNNING, 1
        started, lease_id, expires = t.created_at, lease.lease_id, lease.lease_expires_at
        worker, deadline = lease.worker_id, lease.deadline_at
    return (
        t.id, t.queue, t.type, t.priority, state, attempt,
        t.max_attempts, 0, t.run_at, t.created_at, t.created_at,
        started, lease_id, expires, worker,
        False, t.request_id, t.labels, t.retry_policy, 0,
        timeouts.execution_us, timeouts.heartbeat_us, timeouts.soft_us, expire_at,
        deadline,
        t.concurrency_key, t.trace_context, t.owner,
    )  # fmt: skip


def _task_row(t: NewTask) -> dict[str, Any]:
    return dict(zip(_TASK_COLUMNS, _task_values(t), strict=True))


async def insert_tasks(
    conn: AsyncConnection,
    tasks: Sequence[NewTask],
    leased: dict[str, Claimed] | None = None,
) -> list[str]:
    """Insert tasks; return, per input, the id of the task that now holds its place.

    A task whose request_id already exists (from an earlier call, another
    replica, or earlier in the same batch) is not inserted; its slot gets the
    existing task's id. The unique index decides, not this code. Tasks in
    `leased` (never ones with a request_id) are inserted under that lease.
    """
    leased = leased or {}
    plain = [t for t in tasks if t.request_id is None]
    keyed = [t for t in tasks if t.request_id is not None]
    if plain:
        get = leased.get
        await _INSERT_TASK.run(conn, [_task_values(t, get(t.id)) for t in plain])
    winners: dict[str, str] = {}
    if keyed:
        statement = insert(task, pg=is_pg(conn)).on_conflict_do_nothing()
        await conn.execute(statement, [_task_row(t) for t in keyed])
        rows = await conn.execute(
            sa.select(task.c.request_id, task.c.id).where(
                task.c.request_id.in_({t.request_id for t in keyed})
            )
        )
        winners = {r.request_id: r.id for r in rows}
    inserted = plain + [t for t in keyed if winners.get(t.request_id or "") == t.id]
    await _INSERT_PAYLOAD.run(conn, [(t.id, t.payload) for t in inserted if t.payload])
    return [t.id if t.request_id is None else winners[t.request_id] for t in tasks]


# --- Cancellation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    found: bool
    state: TaskState | None  # after the cancel
    lease: LeaseRef | None = None  # set when a running worker must be told
    queue: str = ""
    type: str = ""
    source: TaskState | None = None  # before the cancel


async def cancel(conn: AsyncConnection, task_id: str, *, reason: str, now: int) -> CancelOutcome:
    query = sa.select(
        task.c.state, task.c.lease_id, task.c.attempt, task.c.queue, task.c.type
    ).where(task.c.id == task_id)
    if is_pg(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return CancelOutcome(False, None)
    state = _S(row.state)
    if state in WAITING:
        await conn.execute(
            sa.update(task)
            .where(task.c.id == task_id, task.c.state == int(state))
            .values(
                state=int(_S.CANCELLED),
                lapsed_lease_id=None,
                finished_at=now,
                updated_at=now,
                error_type="Cancelled",
                error_message=reason or "cancelled before it ran",
                error_details="",
                error_non_retryable=True,
                error_attempt=row.attempt,
            )
        )
        return CancelOutcome(True, _S.CANCELLED, None, row.queue, row.type, state)
    if state is _S.RUNNING:
        await conn.execute(
            sa.update(task)
            .where(task.c.id == task_id, task.c.lease_id == row.lease_id)
            # The reason becomes the error message when the worker stops (core/leases.py);
            # cancelling again is a no-op, so the first reason stays.
            .values(
                cancel_requested=True,
                cancel_reason=sa.func.coalesce(task.c.cancel_reason, reason or None),
                updated_at=now,
            )
        )
        return CancelOutcome(True, _S.RUNNING, LeaseRef(task_id, row.lease_id), row.queue, row.type)
    return CancelOutcome(True, state, None, row.queue, row.type, state)


# --- Reads ----------------------------------------------------------------------------------


def _error(m: Any) -> Failure | None:
    if m["error_type"] is None:
        return None
    return Failure(
        type=m["error_type"],
        message=m["error_message"] or "",
        details=m["error_details"] or "",
        non_retryable=bool(m["error_non_retryable"]),
    )


def _progress(m: Any) -> Progress | None:
    if m["progress_at"] is None:
        return None
    return Progress(
        percent=m["progress_percent"] or 0.0,
        message=m["progress_message"] or "",
        step=m["progress_step"] or 0,
        total_steps=m["progress_total"] or 0,
        at_us=m["progress_at"],
    )


def _record(
    row: sa.Row[Any], payload: bytes | None = None, result: bytes | None = None
) -> TaskRecord:
    m = row._mapping
    return TaskRecord(
        id=m["id"],
        type=m["type"],
        queue=m["queue"],
        priority=m["priority"],
        state=_S(m["state"]),
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        lost_count=m["lost_count"],
        run_at=m["run_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        lease_id=m["lease_id"],
        lease_expires_at=m["lease_expires_at"],
        worker_id=m["worker_id"],
        cancel_requested=bool(m["cancel_requested"]),
        request_id=m["request_id"],
        labels=m["labels"],
        error=_error(m),
        error_attempt=m["error_attempt"],
        progress=_progress(m),
        retry_policy=m["retry_policy"],
        attempt_base=m["attempt_base"],
        timeouts=Timeouts(
            execution_us=m["execution_timeout_us"],
            heartbeat_us=m["heartbeat_timeout_us"],
            soft_us=m["soft_timeout_us"],
            expiry_us=None,
        ),
        expire_at=m["expire_at"],
        deadline_at=m["deadline_at"],
        concurrency_key=m["concurrency_key"],
        trace_context=m["trace_context"],
        payload=payload,
        result=result,
    )


def _with_blobs(full: bool) -> sa.Select[Any]:
    if not full:
        return sa.select(task)
    return (
        sa.select(task, task_payload.c.data.label("payload"), task_result.c.data.label("result"))
        .outerjoin(task_payload, task_payload.c.task_id == task.c.id)
        .outerjoin(task_result, task_result.c.task_id == task.c.id)
    )


def _records(rows: Iterable[sa.Row[Any]], full: bool) -> list[TaskRecord]:
    if not full:
        return [_record(r) for r in rows]
    return [_record(r, r._mapping["payload"], r._mapping["result"]) for r in rows]


async def get_task(conn: AsyncConnection, task_id: str, *, full: bool = True) -> TaskRecord | None:
    rows = await conn.execute(_with_blobs(full).where(task.c.id == task_id))
    records = _records(rows, full)
    return records[0] if records else None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    queue: str | None = None
    state: TaskState | None = None
    type: str | None = None
    owner: str | None = None  # only this identity's tasks (a submitter's listing)
    created_from_us: int | None = None  # created_at >= this
    created_before_us: int | None = None  # created_at < this


async def list_tasks(
    conn: AsyncConnection,
    filters: TaskFilter,
    *,
    limit: int,
    before_id: str | None,
    full: bool,
) -> list[TaskRecord]:
    """Newest first; `before_id` is the keyset cursor of the previous page."""
    query = _with_blobs(full)
    if filters.queue is not None:
        query = query.where(task.c.queue == filters.queue)
    if filters.state is not None:
        query = query.where(task.c.state == int(filters.state))
    if filters.type is not None:
        query = query.where(task.c.type == filters.type)
    if filters.owner is not None:
        query = query.where(task.c.owner == filters.owner)
    if filters.created_from_us is not None:
        query = query.where(task.c.created_at >= filters.created_from_us)
    if filters.created_before_us is not None:
        query = query.where(task.c.created_at < filters.created_before_us)
    if before_id is not None:
        query = query.where(task.c.id < before_id)
    rows = await conn.execute(query.order_by(task.c.id.desc()).limit(limit))
    return _records(rows, full)


async def list_attempts(conn: AsyncConnection, record: TaskRecord) -> list[Attempt]:
    """Every attempt of a task: the recorded ones, then the current or final one."""
    rows = await conn.execute(
        sa.select(task_attempt)
        .where(task_attempt.c.task_id == record.id)
        .order_by(task_attempt.c.attempt)
    )
    attempts = [
        Attempt(
            attempt=r.attempt,
            worker_id=r.worker_id,
            started_at=r.started_at,
            ended_at=r.ended_at,
            outcome=AttemptOutcome(r.outcome),
            error=None
            if r.error_type is None
            else Failure(r.error_type, r.error_message or "", r.error_details or ""),
        )
        for r in rows
    ]
    recorded = {a.attempt for a in attempts}
    if record.attempt > 0 and record.attempt not in recorded:
        attempts.append(_last_attempt(record))
    return attempts


def _last_attempt(record: TaskRecord) -> Attempt:
    outcome = {
        _S.RUNNING: AttemptOutcome.RUNNING,
        _S.SUCCEEDED: AttemptOutcome.SUCCEEDED,
        _S.CANCELLED: AttemptOutcome.CANCELLED,
    }.get(record.state, AttemptOutcome.FAILED)
    error = record.error if record.state is not _S.SUCCEEDED else None
    if outcome is AttemptOutcome.FAILED and error is not None:
        outcome = {
            "ExecutionTimeout": AttemptOutcome.TIMED_OUT,
            "LeaseLost": AttemptOutcome.LEASE_LOST,
        }.get(error.type, AttemptOutcome.FAILED)
    return Attempt(
        attempt=record.attempt,
        worker_id=record.worker_id,
        started_at=record.started_at,
        ended_at=record.finished_at,
        outcome=outcome,
        error=error if outcome is not AttemptOutcome.RUNNING else None,
    )
