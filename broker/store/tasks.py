"""Named queries over the task tables, shared by SQLite and PostgreSQL.

Every write here runs inside a transaction the committer owns. Writes that
end or extend a lease fence first: they read the rows (locking them on
PostgreSQL), keep only those whose `lease_id` still matches, and update with a
compare-and-set on the same lease, so a stale worker can never change a task.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.leases import LeaseRow, Transition, decide
from broker.core.models import (
    Claimed,
    Failure,
    LeaseEnd,
    LeaseRef,
    NewTask,
    Progress,
    Succeeded,
    TaskRecord,
)
from broker.core.retry import RetryPolicy
from broker.core.task_state import WAITING, TaskState, sources_of
from broker.store.schema import state_is, task, task_payload, task_result

_b = sa.bindparam
_S = TaskState


def _is_pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


# --- Submission -----------------------------------------------------------------------------


def _task_row(t: NewTask, lease: Claimed | None = None) -> dict[str, Any]:
    row = {
        "id": t.id,
        "queue": t.queue,
        "type": t.type,
        "priority": t.priority,
        "state": int(t.initial_state),
        "attempt": 0,
        "max_attempts": t.max_attempts,
        "lost_count": 0,
        "run_at": t.run_at,
        "created_at": t.created_at,
        "updated_at": t.created_at,
        "cancel_requested": False,
        "request_id": t.request_id,
        "labels": t.labels,
        "lease_id": None,
        "lease_expires_at": None,
        "worker_id": None,
        "started_at": None,
    }
    if lease is not None:
        # Handed straight to an idle worker: inserted already leased.
        row |= {
            "state": int(_S.RUNNING),
            "attempt": 1,
            "lease_id": lease.lease_id,
            "lease_expires_at": lease.lease_expires_at,
            "worker_id": lease.worker_id,
            "started_at": t.created_at,
        }
    return row


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
        await conn.execute(task.insert(), [_task_row(t, leased.get(t.id)) for t in plain])
    winners: dict[str, str] = {}
    if keyed:
        insert = (postgresql.insert if _is_pg(conn) else sqlite.insert)(task)
        await conn.execute(insert.on_conflict_do_nothing(), [_task_row(t) for t in keyed])
        rows = await conn.execute(
            sa.select(task.c.request_id, task.c.id).where(
                task.c.request_id.in_({t.request_id for t in keyed})
            )
        )
        winners = {r.request_id: r.id for r in rows}
    inserted = plain + [t for t in keyed if winners.get(t.request_id or "") == t.id]
    with_payload = [{"task_id": t.id, "data": t.payload} for t in inserted if t.payload]
    if with_payload:
        await conn.execute(task_payload.insert(), with_payload)
    return [t.id if t.request_id is None else winners[t.request_id] for t in tasks]


# --- Claims ---------------------------------------------------------------------------------


_CLAIM_RETURNING = (
    task.c.id,
    task.c.type,
    task.c.queue,
    task.c.priority,
    task.c.attempt,
    task.c.max_attempts,
    task.c.labels,
    task.c.created_at,
    task.c.run_at,
    # A correlated subquery saves a second round trip for the payloads; both
    # SQLite and PostgreSQL allow it in RETURNING.
    sa.select(task_payload.c.data)
    .where(task_payload.c.task_id == task.c.id)
    .scalar_subquery()
    .label("payload"),
)


def _claim_statement(pg: bool) -> sa.Update:
    candidates = (
        sa.select(task.c.id)
        .where(
            state_is(_S.PENDING, column=task.c.state),
            task.c.queue == _b("b_queue"),
            task.c.type.in_(_b("b_types", expanding=True)),
        )
        .order_by(task.c.priority.desc(), task.c.run_at, task.c.id)
        .limit(_b("b_n", type_=sa.Integer))
    )
    if pg:
        # SKIP LOCKED lets replicas claim side by side; the CTE is materialized
        # so the LIMIT applies once, whatever plan the outer UPDATE gets.
        cte = (
            candidates.with_for_update(skip_locked=True)
            .cte("candidates")
            .prefix_with("MATERIALIZED")
        )
        where: sa.ColumnElement[bool] = task.c.id == cte.c.id
    else:
        where = task.c.id.in_(candidates.scalar_subquery())
    return (
        sa.update(task)
        .where(where)
        .values(
            state=int(_S.RUNNING),
            attempt=task.c.attempt + 1,
            lease_id=_b("b_lease_id"),
            lease_expires_at=_b("b_expires"),
            started_at=_b("b_now"),
            updated_at=_b("b_now"),
            worker_id=_b("b_worker_id"),
        )
        .returning(*_CLAIM_RETURNING)
    )


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}


async def claim(
    conn: AsyncConnection,
    *,
    queue: str,
    types: Sequence[str],
    limit: int,
    worker_id: str,
    lease_id: int,
    now: int,
    expires: int,
) -> list[Claimed]:
    """Lease up to `limit` pending tasks of `queue`, highest priority first, FIFO within."""
    rows = list(
        await conn.execute(
            _CLAIM[_is_pg(conn)],
            {
                "b_queue": queue,
                "b_types": list(types),
                "b_n": limit,
                "b_lease_id": lease_id,
                "b_expires": expires,
                "b_now": now,
                "b_worker_id": worker_id,
            },
        )
    )
    rows.sort(key=lambda r: (-r.priority, r.run_at, r.id))
    return [
        Claimed(
            id=r.id,
            type=r.type,
            queue=r.queue,
            priority=r.priority,
            attempt=r.attempt,
            max_attempts=r.max_attempts,
            labels=r.labels,
            created_at=r.created_at,
            run_at=r.run_at,
            lease_id=lease_id,
            lease_expires_at=expires,
            payload=r.payload,
            worker_id=worker_id,
        )
        for r in rows
    ]


# --- Lease fencing, extension and ending ---------------------------------------------------


async def lease_rows(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, LeaseRow]:
    query = sa.select(
        task.c.id,
        task.c.queue,
        task.c.state,
        task.c.lease_id,
        task.c.attempt,
        task.c.max_attempts,
        task.c.lost_count,
        task.c.cancel_requested,
    ).where(task.c.id.in_(list(ids)))
    if _is_pg(conn):
        query = query.with_for_update()
    return {
        r.id: LeaseRow(
            id=r.id,
            queue=r.queue,
            state=_S(r.state),
            lease_id=r.lease_id,
            attempt=r.attempt,
            max_attempts=r.max_attempts,
            lost_count=r.lost_count,
            cancel_requested=bool(r.cancel_requested),
        )
        for r in await conn.execute(query)
    }


def holds(row: LeaseRow | None, lease_id: int) -> bool:
    return row is not None and row.state is _S.RUNNING and row.lease_id == lease_id


@dataclass(frozen=True, slots=True)
class Extension:
    task_id: str
    lease_id: int
    expires: int
    progress: Progress | None


@dataclass(frozen=True, slots=True)
class ExtendResult:
    ok: bool
    cancel_requested: bool


_EXTEND = (
    sa.update(task)
    .where(
        task.c.id == _b("b_id"),
        task.c.lease_id == _b("b_lease"),
        state_is(_S.RUNNING, column=task.c.state),
    )
    .values(lease_expires_at=_b("b_expires"), updated_at=_b("b_now"))
)

_EXTEND_WITH_PROGRESS = _EXTEND.values(
    progress_percent=_b("b_percent"),
    progress_message=_b("b_message"),
    progress_step=_b("b_step"),
    progress_total=_b("b_total"),
    progress_at=_b("b_at"),
)


async def extend_leases(
    conn: AsyncConnection, items: Sequence[Extension], now: int
) -> dict[str, ExtendResult]:
    rows = await lease_rows(conn, {i.task_id for i in items})
    valid = [i for i in items if holds(rows.get(i.task_id), i.lease_id)]
    plain = [_extend_params(i, now) for i in valid if i.progress is None]
    with_progress = [_extend_params(i, now) for i in valid if i.progress is not None]
    if plain:
        await conn.execute(_EXTEND, plain)
    if with_progress:
        await conn.execute(_EXTEND_WITH_PROGRESS, with_progress)
    results = {}
    for i in items:
        row = rows.get(i.task_id)
        ok = holds(row, i.lease_id)
        results[i.task_id] = ExtendResult(ok, ok and row is not None and row.cancel_requested)
    return results


def _extend_params(item: Extension, now: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "b_id": item.task_id,
        "b_lease": item.lease_id,
        "b_expires": item.expires,
        "b_now": now,
    }
    if item.progress is not None:
        p = item.progress
        params |= {
            "b_percent": p.percent,
            "b_message": p.message,
            "b_step": p.step,
            "b_total": p.total_steps,
            "b_at": p.at_us,
        }
    return params


@dataclass(frozen=True, slots=True)
class Ended:
    """A lease that ended as reported, with the state its task moved to."""

    task_id: str
    queue: str
    state: TaskState
    run_at: int | None


_END = (
    sa.update(task)
    .where(
        task.c.id == _b("b_id"),
        task.c.lease_id == _b("b_lease"),
        state_is(_S.RUNNING, column=task.c.state),
    )
    .values(
        state=_b("b_state"),
        attempt=_b("b_attempt"),
        lost_count=_b("b_lost"),
        run_at=sa.func.coalesce(_b("b_run_at", type_=sa.BigInteger), task.c.run_at),
        finished_at=_b("b_finished_at", type_=sa.BigInteger),
        lease_id=None,
        lease_expires_at=None,
        updated_at=_b("b_now"),
        error_type=sa.func.coalesce(_b("b_error_type", type_=sa.String), task.c.error_type),
        error_message=sa.func.coalesce(_b("b_error_message", type_=sa.Text), task.c.error_message),
        error_details=sa.func.coalesce(_b("b_error_details", type_=sa.Text), task.c.error_details),
        error_non_retryable=sa.func.coalesce(
            _b("b_error_non_retryable", type_=sa.Boolean), task.c.error_non_retryable
        ),
        error_attempt=sa.func.coalesce(
            _b("b_error_attempt", type_=sa.Integer), task.c.error_attempt
        ),
    )
)


async def end_leases(
    conn: AsyncConnection,
    ends: Sequence[LeaseEnd],
    *,
    now: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> list[Ended | None]:
    """Apply each lease's outcome; None in a slot means the lease was no longer held."""
    rows = await lease_rows(conn, {e.task_id for e in ends})
    params: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    out: list[Ended | None] = []
    seen: set[str] = set()
    for end in ends:
        row = rows.get(end.task_id)
        if not holds(row, end.lease_id) or end.task_id in seen:
            out.append(None)
            continue
        assert row is not None
        seen.add(end.task_id)
        transition = decide(row, end.outcome, now=now, policy=policy, rng=rng)
        params.append(_end_params(end, transition, now))
        outcome = end.outcome
        if transition.state is _S.SUCCEEDED and isinstance(outcome, Succeeded) and outcome.result:
            results.append({"task_id": end.task_id, "data": outcome.result})
        out.append(Ended(end.task_id, row.queue, transition.state, transition.run_at))
    if params:
        await conn.execute(_END, params)
    if results:
        await conn.execute(task_result.insert(), results)
    return out


def _end_params(end: LeaseEnd, t: Transition, now: int) -> dict[str, Any]:
    error: Failure | None = t.error
    return {
        "b_id": end.task_id,
        "b_lease": end.lease_id,
        "b_state": int(t.state),
        "b_attempt": t.attempt,
        "b_lost": t.lost_count,
        "b_run_at": t.run_at,
        "b_finished_at": t.finished_at,
        "b_now": now,
        "b_error_type": error.type if error else None,
        "b_error_message": error.message if error else None,
        "b_error_details": error.details if error else None,
        "b_error_non_retryable": error.non_retryable if error else None,
        "b_error_attempt": t.attempt if error else None,
    }


async def adopt_leases(
    conn: AsyncConnection, refs: Sequence[LeaseRef], *, worker_id: str, expires: int, now: int
) -> set[str]:
    """Re-attach leases a reconnecting worker still holds; return the task ids kept."""
    rows = await lease_rows(conn, {r.task_id for r in refs})
    valid = [r for r in refs if holds(rows.get(r.task_id), r.lease_id)]
    if valid:
        await conn.execute(
            _EXTEND.values(worker_id=_b("b_worker")),
            [
                {
                    "b_id": r.task_id,
                    "b_lease": r.lease_id,
                    "b_expires": expires,
                    "b_now": now,
                    "b_worker": worker_id,
                }
                for r in valid
            ],
        )
    return {r.task_id for r in valid}


async def expired_leases(conn: AsyncConnection, *, now: int, limit: int) -> list[LeaseRef]:
    rows = await conn.execute(
        sa.select(task.c.id, task.c.lease_id)
        .where(state_is(_S.RUNNING, column=task.c.state), task.c.lease_expires_at < now)
        .order_by(task.c.lease_expires_at)
        .limit(limit)
    )
    return [LeaseRef(r.id, r.lease_id) for r in rows]


# --- Time-driven moves ------------------------------------------------------------------------


async def promote_due(conn: AsyncConnection, *, now: int, limit: int) -> list[tuple[str, str]]:
    """Move SCHEDULED and RETRYING tasks whose time has come to PENDING.

    Returns (task id, queue) of each task moved.
    """
    due = (
        sa.select(task.c.id)
        .where(state_is(*sorted(sources_of(_S.PENDING) & WAITING), column=task.c.state))
        .where(task.c.run_at <= now)
        .order_by(task.c.run_at)
        .limit(limit)
    )
    if _is_pg(conn):
        due = due.with_for_update(skip_locked=True)
    rows = await conn.execute(
        sa.update(task)
        .where(task.c.id.in_(due.scalar_subquery()))
        .values(state=int(_S.PENDING), updated_at=now)
        .returning(task.c.id, task.c.queue)
    )
    return [(r.id, r.queue) for r in rows]


async def next_due(conn: AsyncConnection) -> int | None:
    """The earliest run_at among tasks waiting for a time, or None."""
    value = await conn.scalar(
        sa.select(sa.func.min(task.c.run_at)).where(
            state_is(_S.SCHEDULED, _S.RETRYING, column=task.c.state)
        )
    )
    return None if value is None else int(value)


# --- Cancellation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    found: bool
    state: TaskState | None
    lease: LeaseRef | None = None  # set when a running worker must be told


async def cancel(conn: AsyncConnection, task_id: str, *, reason: str, now: int) -> CancelOutcome:
    row = (
        await conn.execute(
            sa.select(task.c.state, task.c.lease_id, task.c.attempt).where(task.c.id == task_id)
        )
    ).first()
    if row is None:
        return CancelOutcome(False, None)
    state = _S(row.state)
    if state in WAITING:
        await conn.execute(
            sa.update(task)
            .where(task.c.id == task_id, task.c.state == int(state))
            .values(
                state=int(_S.CANCELLED),
                finished_at=now,
                updated_at=now,
                error_type="Cancelled",
                error_message=reason or "cancelled before it ran",
                error_details="",
                error_non_retryable=True,
                error_attempt=row.attempt,
            )
        )
        return CancelOutcome(True, _S.CANCELLED)
    if state is _S.RUNNING:
        await conn.execute(
            sa.update(task)
            .where(task.c.id == task_id, task.c.lease_id == row.lease_id)
            .values(cancel_requested=True, updated_at=now)
        )
        return CancelOutcome(True, _S.RUNNING, LeaseRef(task_id, row.lease_id))
    return CancelOutcome(True, state)


# --- Reads ----------------------------------------------------------------------------------


def _record(
    row: sa.Row[Any], payload: bytes | None = None, result: bytes | None = None
) -> TaskRecord:
    m = row._mapping
    error = None
    if m["error_type"] is not None:
        error = Failure(
            type=m["error_type"],
            message=m["error_message"] or "",
            details=m["error_details"] or "",
            non_retryable=bool(m["error_non_retryable"]),
        )
    progress = None
    if m["progress_at"] is not None:
        progress = Progress(
            percent=m["progress_percent"] or 0.0,
            message=m["progress_message"] or "",
            step=m["progress_step"] or 0,
            total_steps=m["progress_total"] or 0,
            at_us=m["progress_at"],
        )
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
        error=error,
        error_attempt=m["error_attempt"],
        progress=progress,
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


async def get_tasks(
    conn: AsyncConnection, task_ids: Sequence[str], *, full: bool = True
) -> dict[str, TaskRecord]:
    rows = await conn.execute(_with_blobs(full).where(task.c.id.in_(list(task_ids))))
    return {r.id: r for r in _records(rows, full)}


@dataclass(frozen=True, slots=True)
class TaskFilter:
    queue: str | None = None
    state: TaskState | None = None
    type: str | None = None


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
    if before_id is not None:
        query = query.where(task.c.id < before_id)
    rows = await conn.execute(query.order_by(task.c.id.desc()).limit(limit))
    return _records(rows, full)
