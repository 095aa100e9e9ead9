"""Named queries for submitting, reading and cancelling tasks (SQLite and PostgreSQL).

Every write here runs inside a transaction the committer owns; reads run on the
reader pool.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
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
from broker.store.schema import (
    OWNED_KEY,
    OWNERLESS_KEY,
    task,
    task_attempt,
    task_payload,
    task_result,
)

_S = TaskState


# --- Submission -----------------------------------------------------------------------------


# In the table's column order, which is also the compiled INSERT's: no reordering per row.
_TASK_COLUMNS = (
    "id", "queue", "type", "priority", "state", "attempt", "max_attempts", "lost_count",
    "run_at", "created_at", "updated_at", "started_at", "lease_id", "lease_expires_at",
    "worker_id", "cancel_requested", "request_id", "labels", "retry_policy", "attempt_base",
    "execution_timeout_us", "heartbeat_timeout_us", "soft_timeout_us", "expire_at",
    "deadline_at", "concurrency_key", "trace_context", "owner", "leased_by",
    "workflow_id", "node",
)  # fmt: skip
_INSERT_TASK = BatchWrite(task.insert(), _TASK_COLUMNS)
_INSERT_PAYLOAD = BatchWrite(task_payload.insert(), ("task_id", "data"))
_PENDING = int(_S.PENDING)
_SCHEDULED = int(_S.SCHEDULED)
_RUNNING = int(_S.RUNNING)
_BLOCKED = int(_S.BLOCKED)


def _task_values(t: NewTask, lease: Claimed | None = None) -> tuple[Any, ...]:
    """The row of a new task, in the order of _TASK_COLUMNS.

    With `lease`, the task was handed straight to an idle worker: inserted already leased.
    """
    timeouts = t.timeouts
    expire_at = None if timeouts.expiry_us is None else t.run_at + timeouts.expiry_us
    if lease is None:
        state, attempt = (_SCHEDULED if t.run_at > t.created_at else _PENDING), 0
        if t.blocked:
            state = _BLOCKED
        started = lease_id = expires = worker = deadline = holder = None
    else:
        state, attempt = _RUNNING, 1
        started, lease_id, expires = t.created_at, lease.lease_id, lease.lease_expires_at
        worker, deadline, holder = lease.worker_id, lease.deadline_at, lease.leased_by
    return (
        t.id, t.queue, t.type, t.priority, state, attempt,
        t.max_attempts, 0, t.run_at, t.created_at, t.created_at,
        started, lease_id, expires, worker,
        False, t.request_id, t.labels, t.retry_policy, 0,
        timeouts.execution_us, timeouts.heartbeat_us, timeouts.soft_us, expire_at,
        deadline,
        t.concurrency_key, t.trace_context, t.owner, holder, t.workflow_id, t.node,
    )  # fmt: skip


def _task_row(t: NewTask) -> dict[str, Any]:
    return dict(zip(_TASK_COLUMNS, _task_values(t), strict=True))


async def insert_tasks(
    conn: AsyncConnection,
    tasks: Sequence[NewTask],
    leased: dict[str, Claimed] | None = None,
) -> list[str]:
    """Insert tasks; return, per input, the id of the task that now holds its place.

    A task whose request_id its owner already used (in an earlier call, on
    another replica, or earlier in the same batch) is not inserted; its slot
    gets the existing task's id. Keys are per owner: another owner's task with
    the same key neither blocks the insert nor is ever returned. The unique
    index on (request_id, owner) decides, not this code. Tasks in `leased`
    (never ones with a request_id) are inserted under that lease.
    """
    leased = leased or {}
    plain = [t for t in tasks if t.request_id is None]
    keyed = [t for t in tasks if t.request_id is not None]
    if plain:
        get = leased.get
        await _INSERT_TASK.run(conn, [_task_values(t, get(t.id)) for t in plain])
    winners: dict[tuple[str | None, str | None], str] = {}
    if keyed:
        statement = insert(task, pg=is_pg(conn)).on_conflict_do_nothing()
        await conn.execute(statement, [_task_row(t) for t in keyed])
        winners = await _key_holders(conn, keyed)
    inserted = plain + [t for t in keyed if winners.get((t.owner, t.request_id)) == t.id]
    await _INSERT_PAYLOAD.run(conn, [(t.id, t.payload) for t in inserted if t.payload])
    return [t.id if t.request_id is None else winners[(t.owner, t.request_id)] for t in tasks]


async def _key_holders(
    conn: AsyncConnection, keyed: Sequence[NewTask]
) -> dict[tuple[str | None, str | None], str]:
    """{(owner, request_id): id of the task holding that key} for the keys of `keyed`.

    One probe per namespace present (owned, ownerless; usually one) of the
    partial index covering it. Rows of other owners with the same key come
    back and are dropped here: they never reach a caller.
    """
    holders: dict[tuple[str | None, str | None], str] = {}
    for namespace, tasks in (
        (OWNED_KEY, [t for t in keyed if t.owner is not None]),
        (OWNERLESS_KEY, [t for t in keyed if t.owner is None]),
    ):
        if not tasks:
            continue
        rows = await conn.execute(
            sa.select(task.c.request_id, task.c.owner, task.c.id).where(
                sa.text(namespace), task.c.request_id.in_({t.request_id for t in tasks})
            )
        )
        holders.update(((r.owner, r.request_id), r.id) for r in rows)
    return holders


# --- Cancellation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    found: bool
    state: TaskState | None  # after the cancel
    lease: LeaseRef | None = None  # set when a running worker must be told
    queue: str = ""
    type: str = ""
    source: TaskState | None = None  # before the cancel
    attempt: int = 0
    workflow_id: str | None = None  # of a workflow node


async def cancel(conn: AsyncConnection, task_id: str, *, reason: str, now: int) -> CancelOutcome:
    query = sa.select(
        task.c.state, task.c.lease_id, task.c.attempt, task.c.queue, task.c.type,
        task.c.workflow_id,
    ).where(task.c.id == task_id)  # fmt: skip
    if is_pg(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        return CancelOutcome(False, None)
    state = _S(row.state)
    if state in WAITING or state is _S.BLOCKED:
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
        return CancelOutcome(
            True, _S.CANCELLED, None, row.queue, row.type, state, row.attempt, row.workflow_id
        )
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
        workflow_id=m["workflow_id"],
        node=m["node"],
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


async def get_blobs(
    conn: AsyncConnection, task_id: str, *, payload: bool, result: bool
) -> tuple[bytes | None, bytes | None]:
    """A task's payload and result, as asked (None for one not asked for or absent)."""
    got: list[bytes | None] = [None, None]
    for slot, (wanted, table) in enumerate(((payload, task_payload), (result, task_result))):
        if wanted:
            got[slot] = (
                await conn.execute(sa.select(table.c.data).where(table.c.task_id == task_id))
            ).scalar()
    return got[0], got[1]


@dataclass(frozen=True, slots=True)
class TaskFilter:
    queue: str | None = None
    state: TaskState | None = None
    type: str | None = None
    owner: str | None = None  # only this identity's tasks (a submitter's listing)
    created_from_us: int | None = None  # created_at >= this
    created_before_us: int | None = None  # created_at < this
    labels: Mapping[str, str] | None = None  # every one of these labels, with these values


# A task row's size in a reply besides its text columns and blobs (ids, names,
# timestamps, policy): enough for the page arithmetic, which only has to bound.
ROW_BYTES = 1024
# Labels are JSON text, not indexed: a listing filtered by labels examines at most this many
# tasks per page (newest first) and says where it stopped, so every page costs the same
# however rarely the labels occur (docs/dashboard.md, "Paging").
LABEL_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    records: list[TaskRecord]
    more: bool  # tasks after these match too: the caller hands out a page token
    # With a labels filter: the last task examined when the scan budget ran out before
    # the page was full (the next page continues after it); None otherwise.
    scanned_to: str | None = None


async def list_tasks(
    conn: AsyncConnection,
    filters: TaskFilter,
    *,
    limit: int,
    before_id: str | None,
    full: bool,
    max_bytes: int | None = None,
) -> Page:
    """Newest first; `before_id` is the keyset cursor of the previous page.

    With `max_bytes`, the page also stops before the task that would take it
    over that many bytes (it holds at least one task). The sizes are read
    first (without the blobs and long texts), then only the rows that fit, so
    memory follows the bound, not `limit` times the largest task.
    """
    conditions = _filters(filters, before_id)
    scanned_to = None
    if filters.labels:
        ids, scanned_to = await _label_matches(conn, conditions, filters.labels, limit + 1)
        conditions = [task.c.id.in_(ids)]
    if max_bytes is None:
        query = _with_blobs(full).where(*conditions).order_by(task.c.id.desc())
        records = _records(await conn.execute(query.limit(limit + 1)), full)
        return Page(records[:limit], len(records) > limit, scanned_to)
    sizes = await conn.execute(
        _sizes(full).where(*conditions).order_by(task.c.id.desc()).limit(limit + 1)
    )
    chosen: list[str] = []
    total = 0
    more = False
    for index, (task_id, size) in enumerate(sizes):
        if index == limit or (chosen and total + size > max_bytes):
            more = True
            break
        chosen.append(task_id)
        total += size
    if not chosen:
        return Page([], False, scanned_to)
    rows = await conn.execute(
        _with_blobs(full).where(task.c.id.in_(chosen)).order_by(task.c.id.desc())
    )
    return Page(_records(rows, full), more, None if more else scanned_to)


async def _label_matches(
    conn: AsyncConnection,
    conditions: list[sa.ColumnElement[bool]],
    labels: Mapping[str, str],
    wanted: int,
) -> tuple[list[str], str | None]:
    """Up to `wanted` ids (newest first) of tasks carrying every label, within LABEL_SCAN
    tasks; with the last task examined when the budget ran out first."""
    scan = (
        sa.select(task.c.id, task.c.labels)
        .where(*conditions)
        .order_by(task.c.id.desc())
        .limit(LABEL_SCAN)
    )
    seen = (await conn.execute(scan)).all()
    items = labels.items()
    ids = [r.id for r in seen if r.labels and items <= json.loads(r.labels).items()][:wanted]
    cut = len(seen) == LABEL_SCAN and len(ids) < wanted
    return ids, seen[-1].id if cut else None


def _filters(filters: TaskFilter, before_id: str | None) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.queue is not None:
        conditions.append(task.c.queue == filters.queue)
    if filters.state is not None:
        conditions.append(task.c.state == int(filters.state))
    if filters.type is not None:
        conditions.append(task.c.type == filters.type)
    if filters.owner is not None:
        conditions.append(task.c.owner == filters.owner)
    if filters.created_from_us is not None:
        conditions.append(task.c.created_at >= filters.created_from_us)
    if filters.created_before_us is not None:
        conditions.append(task.c.created_at < filters.created_before_us)
    if before_id is not None:
        conditions.append(task.c.id < before_id)
    return conditions


def _sizes(full: bool) -> sa.Select[Any]:
    """(id, approximate bytes in a reply) per task: its long texts, and its blobs if full."""

    def length(column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.length(column), 0)

    size = (
        ROW_BYTES
        + length(task.c.labels)
        + length(task.c.error_message)
        + length(task.c.error_details)
        + length(task.c.progress_message)
        + length(task.c.trace_context)
    )
    if not full:
        return sa.select(task.c.id, size)
    return (
        sa.select(task.c.id, size + length(task_payload.c.data) + length(task_result.c.data))
        .outerjoin(task_payload, task_payload.c.task_id == task.c.id)
        .outerjoin(task_result, task_result.c.task_id == task.c.id)
    )


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


# --- Facts for the event stream ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What never changes about a task: where it runs, what it is, whose it is."""

    queue: str
    type: str
    owner: str | None
    labels: str | None  # JSON


async def task_facts(conn: AsyncConnection, ids: Collection[str]) -> dict[str, TaskFacts]:
    """The facts of those of these tasks that still exist."""
    query = sa.select(task.c.id, task.c.queue, task.c.type, task.c.owner, task.c.labels)
    rows = await conn.execute(query.where(task.c.id.in_(list(ids))))
    return {r.id: TaskFacts(r.queue, r.type, r.owner, r.labels) for r in rows}
