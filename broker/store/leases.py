"""Named queries for leases: claim, fence, extend, end, adopt, and find expired ones.

Writes that end or extend a lease fence first: they read the rows (locking them
on PostgreSQL), keep only those whose `lease_id` still matches, and update
with a compare-and-set on the same lease, so a stale worker can never change
a task.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.leases import LEASE_LOST_ERROR, LeaseRow, Transition, decide, may_act
from broker.core.models import (
    AttemptOutcome,
    Cancelled,
    Claimed,
    Failed,
    Failure,
    Holder,
    LeaseEnd,
    LeaseRef,
    LogLine,
    Lost,
    Progress,
    Released,
    Succeeded,
)
from broker.core.record import record
from broker.core.retry import RetryPolicy
from broker.core.task_state import TaskState
from broker.store import task_logs
from broker.store.dialect import is_pg
from broker.store.prepared import BatchWrite
from broker.store.schema import state_is, task, task_attempt, task_payload, task_result
from broker.store.sqlite_driver import DEFERRED

_b = sa.bindparam
_S = TaskState


# --- Claims ---------------------------------------------------------------------------------


_CLAIM_RETURNING = (
    task.c.id,
    task.c.type,
    task.c.queue,
    task.c.priority,
    task.c.attempt,
    # Not the policy's max_attempts: the number of the last attempt a failure may have,
    # so that `attempt == max_attempts` tells a worker its attempt is the last (lost
    # leases and attempts before a RetryTask advance the number, not the budget).
    (task.c.max_attempts + task.c.lost_count + task.c.attempt_base).label("max_attempts"),
    task.c.labels,
    task.c.created_at,
    task.c.run_at,
    task.c.lease_expires_at,
    task.c.deadline_at,
    task.c.heartbeat_timeout_us,
    task.c.soft_timeout_us,
    task.c.trace_context,
    task.c.workflow_id,
    task.c.node,
    # A correlated subquery saves a second round trip for the payloads; both
    # SQLite and PostgreSQL allow it in RETURNING.
    sa.select(task_payload.c.data)
    .where(task_payload.c.task_id == task.c.id)
    .scalar_subquery()
    .label("payload"),
)


def _lease_values(update: sa.Update) -> sa.Update:
    return update.values(
        state=int(_S.RUNNING),
        attempt=task.c.attempt + 1,
        lease_id=_b("b_lease_id"),
        lease_expires_at=_b("b_now") + task.c.heartbeat_timeout_us,
        deadline_at=_b("b_now") + task.c.execution_timeout_us,
        started_at=_b("b_now"),
        updated_at=_b("b_now"),
        worker_id=_b("b_worker_id"),
        leased_by=_b("b_leased_by", type_=sa.String),
        # Leased again: the lease lost before is gone for good (see `lapsed`).
        lapsed_lease_id=sa.null(),
    ).returning(*_CLAIM_RETURNING)


def _claim_statement(pg: bool, excluding: bool) -> sa.Update:
    conditions = [
        state_is(_S.PENDING, column=task.c.state),
        task.c.queue == _b("b_queue"),
        task.c.type.in_(_b("b_types", expanding=True)),
        sa.or_(task.c.expire_at.is_(None), task.c.expire_at > _b("b_now")),
    ]
    if excluding:
        # Tasks this session released: never handed back to it (dispatcher.py).
        conditions.append(task.c.id.not_in(_b("b_exclude", expanding=True)))
    candidates = (
        sa.select(task.c.id)
        .where(*conditions)
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
    return _lease_values(sa.update(task).where(where))


_CLAIM = {(pg, ex): _claim_statement(pg, ex) for pg in (False, True) for ex in (False, True)}

# Lease chosen tasks (flow.py picks them); the state check keeps it a claim.
_CLAIM_IDS = _lease_values(
    sa.update(task).where(
        task.c.id.in_(_b("b_ids", expanding=True)), state_is(_S.PENDING, column=task.c.state)
    )
)


async def claim(
    conn: AsyncConnection,
    *,
    queue: str,
    types: Sequence[str],
    limit: int,
    worker_id: str,
    lease_id: int,
    now: int,
    leased_by: str | None = None,
    exclude: Collection[str] = (),
) -> list[Claimed]:
    """Lease up to `limit` pending tasks of `queue`, highest priority first, FIFO within.

    `leased_by` is the identity of the session they go to: only it may act on them.
    Tasks in `exclude` are skipped (those the claiming session released).
    """
    params: dict[str, Any] = {
        "b_queue": queue,
        "b_types": list(types),
        "b_n": limit,
        "b_lease_id": lease_id,
        "b_now": now,
        "b_worker_id": worker_id,
        "b_leased_by": leased_by,
    }
    if exclude:
        params["b_exclude"] = list(exclude)
    rows = list(await conn.execute(_CLAIM[is_pg(conn), bool(exclude)], params))
    return _claimed(rows, lease_id=lease_id, worker_id=worker_id, now=now, leased_by=leased_by)


async def claim_ids(
    conn: AsyncConnection,
    *,
    ids: Sequence[str],
    types: Sequence[str],
    worker_id: str,
    lease_id: int,
    now: int,
    leased_by: str | None = None,
) -> list[Claimed]:
    """Lease exactly these pending tasks (those still pending)."""
    params = {
        "b_ids": list(ids),
        "b_lease_id": lease_id,
        "b_now": now,
        "b_worker_id": worker_id,
        "b_leased_by": leased_by,
    }
    rows = list(await conn.execute(_CLAIM_IDS, params))
    return _claimed(rows, lease_id=lease_id, worker_id=worker_id, now=now, leased_by=leased_by)


def _claimed(
    rows: list[Any], *, lease_id: int, worker_id: str, now: int, leased_by: str | None
) -> list[Claimed]:
    # Rows unpack in _CLAIM_RETURNING's order (a claim converts hundreds at a time).
    rows.sort(key=lambda r: (-r[3], r[8], r[0]))  # priority, run_at, id
    return [
        Claimed(
            id_, type_, queue, priority, attempt, max_attempts, labels, created_at, run_at,
            lease_id, expires, payload, worker_id, heartbeat, deadline,
            None if soft is None else now + soft,
            trace, leased_by, workflow, node,
        )
        for (
            id_, type_, queue, priority, attempt, max_attempts, labels, created_at, run_at,
            expires, deadline, heartbeat, soft, trace, workflow, node, payload,
        ) in rows
    ]  # fmt: skip


# --- Fencing --------------------------------------------------------------------------------


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
        task.c.attempt_base,
        task.c.retry_policy,
        task.c.heartbeat_timeout_us,
        task.c.worker_id,
        task.c.started_at,
        task.c.type,
        task.c.leased_by,
        task.c.workflow_id,
        task.c.lapsed_lease_id,
        task.c.cancel_reason,
        task.c.execution_timeout_us,
    )
    if is_pg(conn):
        # One array parameter: an IN list would be a new statement, prepared and planned
        # anew, for every number of ids (49 ms a commit under end-to-end load).
        query = query.where(task.c.id == sa.any_(sa.bindparam("ids", list(ids), _IDS)))
        # In id order, so that two replicas locking overlapping rows cannot deadlock.
        query = query.order_by(task.c.id).with_for_update()
    else:
        query = query.where(task.c.id.in_(list(ids)))
    # Columns in LeaseRow's field order; positional, as it runs once per ended lease.
    state_of = _STATE_OF
    return {
        r[0]: LeaseRow(r[0], r[1], state_of[r[2]], r[3], r[4], r[5], r[6], bool(r[7]), *r[8:])
        for r in await conn.execute(query)
    }


_STATE_OF = {int(s): s for s in TaskState}
_IDS = postgresql.ARRAY(sa.String)


def holds(row: LeaseRow | None, lease_id: int, by: Holder | None = None) -> bool:
    """The lease is current, and `by` (a worker; None: the broker) may act on it."""
    return (
        row is not None
        and row.state is _S.RUNNING
        and row.lease_id == lease_id
        and may_act(row, by)
    )


def lapsed(row: LeaseRow | None, lease_id: int, by: Holder | None = None) -> bool:
    """The lease was lost (expired, or its stream closed) and nobody has leased the task since.

    Its worker may still finish what it started: a completion, a heartbeat or a
    re-adoption with this lease restores it as if it had never been lost (the
    loss is taken back), so a worker that was frozen, partitioned or backing off
    runs nothing twice when nobody else took its task meanwhile. Only the
    identity that held it may (`may_act`).
    """
    return (
        row is not None
        and row.state is _S.PENDING
        and row.lapsed_lease_id == lease_id
        and may_act(row, by)
    )


def restored(row: LeaseRow) -> LeaseRow:
    """A lapsed lease's row as it was while held: running, the loss not counted."""
    return replace(row, state=_S.RUNNING, lost_count=max(row.lost_count - 1, 0))


# --- Extension ------------------------------------------------------------------------------


@record
class Extension:
    task_id: str
    lease_id: int
    progress: Progress | None
    by: Holder | None = None  # the worker asking; see holds()
    logs: tuple[LogLine, ...] = ()


@record
class ExtendResult:
    ok: bool
    cancel_requested: bool = False
    expires: int = 0
    queue: str = ""
    type: str = ""
    restored: bool = False  # a lapsed lease this brought back (PENDING to RUNNING)
    attempt: int = 0


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
    """Extend each held (or lapsed) lease by its heartbeat timeout, recording progress and logs.

    Log records are stored with the attempt that holds the lease; those of a lease no
    longer held are dropped with it.
    """
    rows = await lease_rows(conn, {i.task_id for i in items})
    results: dict[str, ExtendResult] = {}
    plain: list[dict[str, Any]] = []
    with_progress: list[dict[str, Any]] = []
    logged: list[tuple[Any, ...]] = []
    back: list[tuple[LeaseRow, int, int]] = []
    for item in items:
        row = rows.get(item.task_id)
        if row is None:
            results[item.task_id] = ExtendResult(False)
            continue
        was_lapsed = lapsed(row, item.lease_id, item.by)
        if not (was_lapsed or holds(row, item.lease_id, item.by)):
            results[item.task_id] = ExtendResult(False)
            continue
        expires = now + row.heartbeat_timeout_us
        if was_lapsed:
            back.append((row, item.lease_id, expires))
            rows[item.task_id] = restored(row)  # a second heartbeat in the batch extends it
        results[item.task_id] = ExtendResult(
            True, row.cancel_requested, expires, row.queue, row.type, was_lapsed, row.attempt
        )
        params = _extend_params(item, expires, now)
        (plain if item.progress is None else with_progress).append(params)
        logged += [(row.id, row.attempt, x.at_us, x.level, x.message) for x in item.logs]
    await _restore(conn, back, worker_id=None, by=None, now=now)
    if plain:
        await conn.execute(_EXTEND, plain, execution_options=DEFERRED)
    if with_progress:
        await conn.execute(_EXTEND_WITH_PROGRESS, with_progress, execution_options=DEFERRED)
    await task_logs.insert(conn, logged)
    return results


def _extend_params(item: Extension, expires: int, now: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "b_id": item.task_id,
        "b_lease": item.lease_id,
        "b_expires": expires,
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


@record
class Adopted:
    """A lease a reconnecting worker keeps: its new expiry, and whether it had lapsed."""

    expires: int
    restored: bool = False
    queue: str = ""
    type: str = ""
    attempt: int = 0


async def adopt_leases(
    conn: AsyncConnection,
    refs: Sequence[LeaseRef],
    *,
    worker_id: str,
    now: int,
    by: Holder | None = None,
) -> dict[str, Adopted]:
    """Re-attach leases a reconnecting worker still holds, lapsed ones included.

    Only leases `by` may act on are kept, and they are bound to its identity.
    """
    rows = await lease_rows(conn, {r.task_id for r in refs})
    kept: dict[str, Adopted] = {}
    params = []
    back: list[tuple[LeaseRow, int, int]] = []
    for ref in refs:
        row = rows.get(ref.task_id)
        if row is None or ref.task_id in kept:
            continue
        expires = now + row.heartbeat_timeout_us
        if lapsed(row, ref.lease_id, by):
            back.append((row, ref.lease_id, expires))
            kept[ref.task_id] = Adopted(expires, True, row.queue, row.type, row.attempt)
            continue
        if not holds(row, ref.lease_id, by):
            continue
        kept[ref.task_id] = Adopted(expires)
        params.append(
            {
                "b_id": ref.task_id,
                "b_lease": ref.lease_id,
                "b_expires": expires,
                "b_now": now,
                "b_worker": worker_id,
                "b_leased_by": None if by is None else by.identity,
            }
        )
    if params:
        await conn.execute(_ADOPT, params)
    await _restore(conn, back, worker_id=worker_id, by=by, now=now)
    return kept


_ADOPT = _EXTEND.values(
    worker_id=_b("b_worker"),
    leased_by=sa.func.coalesce(_b("b_leased_by", type_=sa.String), task.c.leased_by),
)


def _unless_lost(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The column, or NULL when the task's error is the loss of its current attempt."""
    lost_now = sa.and_(
        task.c.error_type == sa.literal_column(f"'{LEASE_LOST_ERROR}'"),
        task.c.error_attempt == task.c.attempt,
    )
    return sa.case((lost_now, sa.null()), else_=column)


_ERROR_COLUMNS = (
    "error_type", "error_message", "error_details", "error_non_retryable", "error_attempt",
)  # fmt: skip

# A lapsed lease comes back: RUNNING again under the same lease, the loss and its
# attempt record taken back, the execution deadline as it was.
_RESTORE = (
    sa.update(task)
    .where(
        task.c.id == _b("b_id"),
        task.c.lapsed_lease_id == _b("b_lapsed"),
        state_is(_S.PENDING, column=task.c.state),
    )
    .values(
        state=int(_S.RUNNING),
        lease_id=task.c.lapsed_lease_id,
        lapsed_lease_id=sa.null(),
        lost_count=task.c.lost_count - 1,
        lease_expires_at=_b("b_expires"),
        deadline_at=task.c.started_at + task.c.execution_timeout_us,
        worker_id=sa.func.coalesce(_b("b_worker", type_=sa.String), task.c.worker_id),
        leased_by=sa.func.coalesce(_b("b_leased_by", type_=sa.String), task.c.leased_by),
        updated_at=_b("b_now"),
        **{name: _unless_lost(task.c[name]) for name in _ERROR_COLUMNS},
    )
)
_FORGET_LOSS = sa.delete(task_attempt).where(
    task_attempt.c.task_id == _b("b_id"),
    task_attempt.c.attempt == _b("b_attempt"),
    task_attempt.c.outcome == AttemptOutcome.LEASE_LOST.value,
)


async def _restore(
    conn: AsyncConnection,
    back: Sequence[tuple[LeaseRow, int, int]],
    *,
    worker_id: str | None,
    by: Holder | None,
    now: int,
) -> None:
    if not back:
        return
    identity = None if by is None else by.identity
    await conn.execute(
        _RESTORE,
        [
            {
                "b_id": r.id,
                "b_lapsed": lease,
                "b_expires": expires,
                "b_worker": worker_id,
                "b_leased_by": identity,
                "b_now": now,
            }
            for r, lease, expires in back
        ],
    )
    await conn.execute(_FORGET_LOSS, [{"b_id": r.id, "b_attempt": r.attempt} for r, _, _ in back])


# --- Ending ---------------------------------------------------------------------------------


@record
class Ended:
    """A lease that ended as reported, with the state its task moved to."""

    task_id: str
    queue: str
    state: TaskState
    run_at: int | None
    type: str = ""
    started_at: int | None = None
    counted: bool = True  # False for a released lease: the attempt never ran
    lost: bool = False
    attempt: int = 0  # the task's attempt number after the end
    workflow_id: str | None = None  # of a workflow node (engine/flows.py settles it)
    source: TaskState = TaskState.RUNNING  # PENDING when a lapsed lease reported


def _end_values(*, error: Any = None) -> dict[str, Any]:
    error = error or (lambda name: task.c[name])
    return {
        "state": _b("b_state"),
        "attempt": _b("b_attempt"),
        "lost_count": _b("b_lost"),
        "run_at": sa.func.coalesce(_b("b_run_at", type_=sa.BigInteger), task.c.run_at),
        "finished_at": _b("b_finished_at", type_=sa.BigInteger),
        "lease_id": sa.null(),
        "lapsed_lease_id": _b("b_lapsed", type_=sa.BigInteger),
        "lease_expires_at": sa.null(),
        "deadline_at": sa.null(),
        "updated_at": _b("b_now"),
        "error_type": sa.func.coalesce(_b("b_error_type", type_=sa.String), error("error_type")),
        "error_message": sa.func.coalesce(
            _b("b_error_message", type_=sa.Text), error("error_message")
        ),
        "error_details": sa.func.coalesce(
            _b("b_error_details", type_=sa.Text), error("error_details")
        ),
        "error_non_retryable": sa.func.coalesce(
            _b("b_error_non_retryable", type_=sa.Boolean), error("error_non_retryable")
        ),
        "error_attempt": sa.func.coalesce(
            _b("b_error_attempt", type_=sa.Integer), error("error_attempt")
        ),
    }


_END = (
    sa.update(task)
    .where(
        task.c.id == _b("b_id"),
        task.c.lease_id == _b("b_lease"),
        state_is(_S.RUNNING, column=task.c.state),
    )
    .values(**_end_values())
)
# The end of a lapsed lease (see `lapsed`): fenced on the lapsed id of a task
# nobody leased since; the error its loss recorded is taken back.
_END_LAPSED = (
    sa.update(task)
    .where(
        task.c.id == _b("b_id"),
        task.c.lapsed_lease_id == _b("b_lease"),
        state_is(_S.PENDING, column=task.c.state),
    )
    .values(**_end_values(error=lambda name: _unless_lost(task.c[name])))
)

# In the order the compiled UPDATE binds them: no reordering per row.
_END_NAMES = (
    "b_state", "b_attempt", "b_lost", "b_run_at", "b_now", "b_finished_at", "b_error_type",
    "b_error_message", "b_error_details", "b_error_non_retryable", "b_error_attempt",
    "b_lapsed", "b_id", "b_lease",
)  # fmt: skip
# One row per task (end_leases skips a task it has seen): they may share statements.
_END_WRITE = BatchWrite(_END, _END_NAMES, distinct_targets=True)
_END_LAPSED_WRITE = BatchWrite(_END_LAPSED, _END_NAMES, distinct_targets=True)
_RESULT_WRITE = BatchWrite(task_result.insert(), ("task_id", "data"))
_ATTEMPT_WRITE = BatchWrite(
    task_attempt.insert(),
    (
        "task_id", "attempt", "worker_id", "started_at", "ended_at", "outcome", "error_type",
        "error_message", "error_details",
    ),
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _policy(text: str) -> RetryPolicy:
    return RetryPolicy.from_json(text)


# What a lapsed lease may still report: an outcome of the attempt it ran. A
# release or another loss of a lease already lost changes nothing.
_REPORTS = (Succeeded, Failed, Cancelled)


async def end_leases(
    conn: AsyncConnection,
    ends: Sequence[LeaseEnd],
    *,
    now: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> list[Ended | None]:
    """Apply each lease's outcome; None in a slot means the lease was no longer held.

    `policy` is the broker's default, for tasks created without their own. A
    lapsed lease's outcome is applied too, its loss taken back (see `lapsed`).
    """
    rows = await lease_rows(conn, {e.task_id for e in ends})
    params: list[tuple[Any, ...]] = []
    lapsed_params: list[tuple[Any, ...]] = []
    results: list[tuple[str, bytes]] = []
    attempts: list[tuple[Any, ...]] = []
    forget: list[dict[str, Any]] = []
    out: list[Ended | None] = []
    seen: set[str] = set()
    for end in ends:
        row = rows.get(end.task_id)
        if row is None or end.task_id in seen:
            out.append(None)
            continue
        was_lapsed = isinstance(end.outcome, _REPORTS) and lapsed(row, end.lease_id, end.by)
        if not (was_lapsed or holds(row, end.lease_id, end.by)):
            out.append(None)
            continue
        seen.add(end.task_id)
        if was_lapsed:
            forget.append({"b_id": row.id, "b_attempt": row.attempt})
            row = restored(row)
        own = _policy(row.retry_policy) if row.retry_policy else policy
        transition = decide(row, end.outcome, now=now, policy=own, rng=rng)
        (lapsed_params if was_lapsed else params).append(_end_params(end, transition, now))
        outcome = end.outcome
        if transition.state is _S.SUCCEEDED and isinstance(outcome, Succeeded) and outcome.result:
            results.append((end.task_id, outcome.result))
        if transition.recorded is not None:
            attempts.append(_attempt_row(row, transition, now))
        out.append(
            Ended(
                end.task_id,
                row.queue,
                transition.state,
                transition.run_at,
                type=row.type,
                started_at=row.started_at,
                counted=not isinstance(outcome, Released),
                lost=isinstance(outcome, Lost),
                attempt=transition.attempt,
                workflow_id=row.workflow_id,
                source=_S.PENDING if was_lapsed else _S.RUNNING,
            )
        )
    await _END_WRITE.run(conn, params)
    if lapsed_params:
        await _END_LAPSED_WRITE.run(conn, lapsed_params)
        await conn.execute(_FORGET_LOSS, forget)
    await _RESULT_WRITE.run(conn, results)
    await _ATTEMPT_WRITE.run(conn, attempts)
    return out


def _end_params(end: LeaseEnd, t: Transition, now: int) -> tuple[Any, ...]:
    """The parameters of _END_WRITE, in its order."""
    error: Failure | None = t.error
    # A lost lease stays reportable while its task waits for another holder.
    lapse = end.lease_id if isinstance(end.outcome, Lost) and t.state is _S.PENDING else None
    head = (int(t.state), t.attempt, t.lost_count, t.run_at, now, t.finished_at)
    tail = (lapse, end.task_id, end.lease_id)
    if error is None:
        return (*head, None, None, None, None, None, *tail)
    return (*head, error.type, error.message, error.details, error.non_retryable, t.attempt, *tail)


def _attempt_row(row: LeaseRow, t: Transition, now: int) -> tuple[Any, ...]:
    """The parameters of _ATTEMPT_WRITE, in its order."""
    assert t.recorded is not None
    error = t.error
    return (
        row.id,
        row.attempt,
        row.worker_id,
        row.started_at,
        now,
        t.recorded.value,
        error.type if error else None,
        error.message if error else None,
        error.details if error else None,
    )


# --- Sweeps ---------------------------------------------------------------------------------


async def expired_leases(conn: AsyncConnection, *, now: int, limit: int) -> list[LeaseRef]:
    """Leases whose heartbeat deadline passed."""
    rows = await conn.execute(
        sa.select(task.c.id, task.c.lease_id)
        .where(state_is(_S.RUNNING, column=task.c.state), task.c.lease_expires_at < now)
        .order_by(task.c.lease_expires_at)
        .limit(limit)
    )
    return [LeaseRef(r.id, r.lease_id) for r in rows]


async def overdue_attempts(
    conn: AsyncConnection, *, now: int, limit: int
) -> list[tuple[LeaseRef, int]]:
    """Attempts past their execution deadline, with their execution timeout."""
    rows = await conn.execute(
        sa.select(task.c.id, task.c.lease_id, task.c.execution_timeout_us)
        .where(
            sa.text("state = 3 AND deadline_at IS NOT NULL"),
            task.c.deadline_at < now,
        )
        .order_by(task.c.deadline_at)
        .limit(limit)
    )
    return [(LeaseRef(r.id, r.lease_id), r.execution_timeout_us or 0) for r in rows]
