"""Named queries that write workflows: creation, edges and gates, release, skip, counters.

Every statement here runs inside a committer transaction. Releasing is
exactly once by construction: a node with one parent is decided only by the
transaction whose compare-and-set moved that parent to a final state; a node
with several parents keeps a gate row, locked (PostgreSQL: in id order) and
counted under the lock, and `decided_at` is set by the one transaction that
saw its rule decided; and every move of the node itself is a compare-and-set
on `state = BLOCKED`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import LeaseRef
from broker.core.task_state import TaskState
from broker.core.workflows import (
    CLEANUP_RULES,
    Counts,
    Gate,
    NewWorkflow,
    Rule,
    Tally,
    WorkflowState,
)
from broker.store.dialect import insert, is_pg
from broker.store.prepared import BatchWrite
from broker.store.schema import state_is, task, wf_edge, wf_gate, workflow

_S = TaskState
_STATE = {int(s): s for s in TaskState}  # faster than TaskState(n) per row
_b = sa.bindparam
CHUNK = 2000  # ids per IN list: SQLite allows 32,766 variables, PostgreSQL 65,535


def chunks(items: Sequence[str], size: int = CHUNK) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True, slots=True)
class NodeMove:
    """A workflow node that moved in this transaction (to a final state, or released)."""

    task_id: str
    workflow_id: str
    queue: str
    type: str
    source: TaskState
    state: TaskState
    run_at: int = 0


@dataclass(frozen=True, slots=True)
class Edge:
    child_id: str
    parent_id: str
    rule: Rule
    gated: bool
    joins: bool


# --- Creation -------------------------------------------------------------------------------


async def insert_workflow(conn: AsyncConnection, wf: NewWorkflow, *, nodes: int) -> str:
    """Insert the workflow row; for a request_id already used, return that workflow's id."""
    values = {
        "id": wf.id,
        "name": wf.name,
        "state": int(WorkflowState.RUNNING),
        "failure_policy": int(wf.failure_policy),
        "generation": 0,
        "nodes_total": nodes,
        "nodes_open": nodes,
        "nodes_failed": 0,
        "nodes_cancelled": 0,
        "labels": wf.labels,
        "template_name": wf.template_name,
        "template_version": wf.template_version,
        "params": wf.params,
        "request_id": wf.request_id,
        "owner": wf.owner,
        "created_at": wf.created_at,
        "updated_at": wf.created_at,
        "finished_at": None,
    }
    if wf.request_id is None:
        await conn.execute(workflow.insert(), values)
        return wf.id
    result = await conn.execute(
        insert(workflow, pg=is_pg(conn)).values(values).on_conflict_do_nothing()
    )
    if result.rowcount:
        return wf.id
    existing = await conn.scalar(
        sa.select(workflow.c.id).where(workflow.c.request_id == wf.request_id)
    )
    return str(existing)


_EDGE_WRITE = BatchWrite(wf_edge.insert(), ("child_id", "parent_id", "rule", "gated", "joins"))
_GATE_WRITE = BatchWrite(
    wf_gate.insert(),
    (
        "task_id", "rule", "n_total", "n_ok", "n_failed", "n_cancelled", "n_skipped",
        "open_spawners", "decided_at",
    ),
)  # fmt: skip


async def insert_edges(conn: AsyncConnection, edges: Sequence[Edge]) -> None:
    await _EDGE_WRITE.run(
        conn, [(e.child_id, e.parent_id, int(e.rule), e.gated, e.joins) for e in edges]
    )


async def insert_gates(conn: AsyncConnection, gates: Sequence[tuple[str, Rule, Counts]]) -> None:
    await _GATE_WRITE.run(
        conn,
        [
            (i, int(r), c.total, c.ok, c.failed, c.cancelled, c.skipped, c.open_spawners, None)
            for i, r, c in gates
        ],
    )


async def lock_nodes(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, tuple[TaskState, str]]:
    """Read nodes' states (and names), locking them on PostgreSQL, in id order.

    A node created with a dependency on an existing one reads its parents
    this way: a parent finishing at the same moment either committed first
    (and is read finished, counted here) or waits for this transaction (and
    its later read of the edges sees the new ones, counted there).
    """
    out: dict[str, tuple[TaskState, str]] = {}
    for part in chunks(sorted(ids)):
        query = sa.select(task.c.id, task.c.state, task.c.node).where(task.c.id.in_(part))
        if is_pg(conn):
            query = query.order_by(task.c.id).with_for_update(read=True)
        for r in await conn.execute(query):
            out[r.id] = (_STATE[r.state], r.node)
    return out


# --- Settling: edges, gates, releases, skips ----------------------------------------------


async def edges_from(conn: AsyncConnection, parent_ids: Sequence[str]) -> list[Edge]:
    out: list[Edge] = []
    columns = (wf_edge.c.child_id, wf_edge.c.parent_id, wf_edge.c.rule, wf_edge.c.gated)
    for part in chunks(parent_ids):
        rows = await conn.execute(
            sa.select(*columns, wf_edge.c.joins).where(wf_edge.c.parent_id.in_(part))
        )
        out += [Edge(r[0], r[1], Rule(r[2]), bool(r[3]), bool(r[4])) for r in rows]
    return out


_BUMP = (
    sa.update(wf_gate)
    .where(wf_gate.c.task_id == _b("b_id"))
    .values(
        n_ok=wf_gate.c.n_ok + _b("b_ok"),
        n_failed=wf_gate.c.n_failed + _b("b_failed"),
        n_cancelled=wf_gate.c.n_cancelled + _b("b_cancelled"),
        n_skipped=wf_gate.c.n_skipped + _b("b_skipped"),
        open_spawners=wf_gate.c.open_spawners - _b("b_closed"),
    )
)
_BUMP_WRITE = BatchWrite(
    _BUMP, ("b_ok", "b_failed", "b_cancelled", "b_skipped", "b_closed", "b_id")
)


async def count_into_gates(
    conn: AsyncConnection, deltas: Mapping[str, tuple[int, int, int, int, int]]
) -> dict[str, Gate]:
    """Add parents' outcomes to gates, under their locks; return the gates as they are now.

    `deltas` maps a gate to (ok, failed, cancelled, skipped, spawners closed).
    On PostgreSQL the gates are locked first, in id order, so that two
    replicas counting into overlapping gates cannot deadlock, and the read
    after the update (a later statement) sees every committed count.
    """
    ids = sorted(deltas)
    if is_pg(conn):
        for part in chunks(ids):
            await conn.execute(
                sa.select(wf_gate.c.task_id)
                .where(wf_gate.c.task_id.in_(part))
                .order_by(wf_gate.c.task_id)
                .with_for_update()
            )
    await _BUMP_WRITE.run(conn, [(*deltas[i], i) for i in ids], defer=False)
    return await read_gates(conn, ids)


async def read_gates(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Gate]:
    out: dict[str, Gate] = {}
    for part in chunks(ids):
        for r in await conn.execute(sa.select(wf_gate).where(wf_gate.c.task_id.in_(part))):
            counts = Counts(
                r.n_total, r.n_ok, r.n_failed, r.n_cancelled, r.n_skipped, r.open_spawners
            )
            out[r.task_id] = Gate(r.task_id, Rule(r.rule), counts, r.decided_at is not None)
    return out


async def mark_decided(conn: AsyncConnection, ids: Sequence[str], now: int) -> None:
    for part in chunks(ids):
        await conn.execute(
            sa.update(wf_gate)
            .where(wf_gate.c.task_id.in_(part), wf_gate.c.decided_at.is_(None))
            .values(decided_at=now)
        )


_RELEASE_RETURNING = (
    task.c.id, task.c.workflow_id, task.c.queue, task.c.type, task.c.state, task.c.run_at
)  # fmt: skip


async def release(conn: AsyncConnection, ids: Sequence[str], now: int) -> list[NodeMove]:
    """BLOCKED nodes whose rule holds become PENDING (SCHEDULED if their run time is ahead).

    Their expiry clock starts now: a blocked node's `expire_at` is kept
    relative to its `run_at` and both move forward together.
    """
    late = task.c.run_at < now
    out: list[NodeMove] = []
    for part in chunks(ids):
        rows = await conn.execute(
            sa.update(task)
            .where(task.c.id.in_(part), state_is(_S.BLOCKED, column=task.c.state))
            .values(
                state=sa.case((task.c.run_at > now, int(_S.SCHEDULED)), else_=int(_S.PENDING)),
                expire_at=task.c.expire_at + sa.case((late, now - task.c.run_at), else_=0),
                run_at=sa.case((late, now), else_=task.c.run_at),
                updated_at=now,
            )
            .returning(*_RELEASE_RETURNING)
        )
        out += [NodeMove(r[0], r[1], r[2], r[3], _S.BLOCKED, _STATE[r[4]], r[5]) for r in rows]
    return out


async def skip(
    conn: AsyncConnection, ids: Sequence[str], *, reason: str, message: str, now: int
) -> list[NodeMove]:
    """BLOCKED nodes whose rule can no longer hold become SKIPPED (final; they never ran)."""
    out: list[NodeMove] = []
    for part in chunks(ids):
        rows = await conn.execute(
            sa.update(task)
            .where(task.c.id.in_(part), state_is(_S.BLOCKED, column=task.c.state))
            .values(
                state=int(_S.SKIPPED),
                finished_at=now,
                updated_at=now,
                error_type=reason,
                error_message=message,
                error_details="",
                error_non_retryable=True,
                error_attempt=task.c.attempt,
            )
            .returning(*_RELEASE_RETURNING)
        )
        out += [NodeMove(r[0], r[1], r[2], r[3], _S.BLOCKED, _S.SKIPPED, r[5]) for r in rows]
    return out


# --- The workflow's counters ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    id: str
    state: WorkflowState
    failure_policy: int
    nodes_open: int
    nodes_failed: int
    nodes_cancelled: int
    finished: bool
    nodes_total: int = 0


_ACCOUNT = (
    sa.update(workflow)
    .where(workflow.c.id == _b("b_id"))
    .values(
        nodes_open=workflow.c.nodes_open - _b("b_finished") + _b("b_added"),
        nodes_total=workflow.c.nodes_total + _b("b_added"),
        nodes_failed=workflow.c.nodes_failed + _b("b_failed"),
        nodes_cancelled=workflow.c.nodes_cancelled + _b("b_cancelled"),
        updated_at=_b("b_now"),
    )
)
_ACCOUNT_WRITE = BatchWrite(
    _ACCOUNT, ("b_finished", "b_added", "b_failed", "b_cancelled", "b_now", "b_id")
)


async def account(
    conn: AsyncConnection, tallies: Mapping[str, Tally], now: int
) -> dict[str, WorkflowRow]:
    """Count finished (and added) nodes into their workflows; return the rows as they are now.

    The update takes each row's lock (replicas serialise on it), so the row
    read afterwards shows every committed count: the transaction that
    brings `nodes_open` to 0 sees 0.
    """
    ids = sorted(tallies)
    if len(ids) == 1:  # the usual case (a chain's hop): one statement, not two
        t = tallies[ids[0]]
        values = {
            "b_finished": t.finished, "b_added": t.added, "b_failed": t.failed,
            "b_cancelled": t.cancelled, "b_now": now, "b_id": ids[0],
        }  # fmt: skip
        row = (await conn.execute(_ACCOUNT.returning(*_ROW), values)).first()
        return {} if row is None else {row[0]: _row(row)}
    params = [
        (t.finished, t.added, t.failed, t.cancelled, now, i) for i in ids for t in (tallies[i],)
    ]
    await _ACCOUNT_WRITE.run(conn, params, defer=False)
    return await workflow_rows(conn, ids)


_ROW = (
    workflow.c.id, workflow.c.state, workflow.c.failure_policy, workflow.c.nodes_open,
    workflow.c.nodes_failed, workflow.c.nodes_cancelled, workflow.c.finished_at,
    workflow.c.nodes_total,
)  # fmt: skip


def _row(r: Any) -> WorkflowRow:
    return WorkflowRow(r[0], WorkflowState(r[1]), r[2], r[3], r[4], r[5], r[6] is not None, r[7])


async def workflow_rows(
    conn: AsyncConnection, ids: Iterable[str], *, lock: bool = False
) -> dict[str, WorkflowRow]:
    out: dict[str, WorkflowRow] = {}
    for part in chunks(sorted(set(ids))):
        query = sa.select(*_ROW).where(workflow.c.id.in_(part))
        if lock and is_pg(conn):
            query = query.order_by(workflow.c.id).with_for_update()
        for r in await conn.execute(query):
            out[r[0]] = _row(r)
    return out


async def finish(conn: AsyncConnection, wf_id: str, state: WorkflowState, now: int) -> bool:
    """Record that every node finished; the state stays as it is unless still RUNNING."""
    result = await conn.execute(
        sa.update(workflow)
        .where(workflow.c.id == wf_id, workflow.c.nodes_open == 0, workflow.c.finished_at.is_(None))
        .values(
            state=sa.case(
                (workflow.c.state == int(WorkflowState.RUNNING), int(state)),
                else_=workflow.c.state,
            ),
            finished_at=now,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def set_state(
    conn: AsyncConnection, wf_id: str, state: WorkflowState, now: int, *, only_running: bool = True
) -> bool:
    query = sa.update(workflow).where(workflow.c.id == wf_id)
    if only_running:
        query = query.where(workflow.c.state == int(WorkflowState.RUNNING))
    result = await conn.execute(query.values(state=int(state), updated_at=now))
    return bool(result.rowcount)


_WAITING_NODES = (_S.BLOCKED, _S.SCHEDULED, _S.PENDING, _S.RETRYING)


async def cancel_nodes(
    conn: AsyncConnection,
    wf_id: str,
    *,
    error_type: str,
    message: str,
    spare_cleanup: bool,
    now: int,
) -> tuple[list[NodeMove], list[LeaseRef]]:
    """Cancel a workflow's unfinished nodes: waiting ones at once, running ones by request.

    Returns the nodes cancelled now and the leases whose workers must be told
    to stop. With `spare_cleanup`, nodes whose rule runs after failures
    (ALL_FINISHED, ANY_FAILED) are left to run.
    """
    query = sa.select(
        task.c.id, task.c.queue, task.c.type, task.c.state, task.c.lease_id, task.c.run_at
    ).where(
        task.c.workflow_id == wf_id,
        task.c.state.in_([int(s) for s in (*_WAITING_NODES, _S.RUNNING)]),
    )
    if spare_cleanup:
        cleanup = sa.select(wf_edge.c.child_id).where(
            wf_edge.c.child_id == task.c.id, wf_edge.c.rule.in_([int(r) for r in CLEANUP_RULES])
        )
        query = query.where(~sa.exists(cleanup))
    if is_pg(conn):
        query = query.order_by(task.c.id).with_for_update()
    rows = list(await conn.execute(query))
    waiting = [r for r in rows if _STATE[r.state] is not _S.RUNNING]
    running = [r for r in rows if _STATE[r.state] is _S.RUNNING]
    cancelled: list[NodeMove] = []
    for state in _WAITING_NODES:
        ids = [r.id for r in waiting if r.state == int(state)]
        for part in chunks(ids):
            moved = await conn.execute(
                sa.update(task)
                .where(task.c.id.in_(part), task.c.state == int(state))
                .values(
                    state=int(_S.CANCELLED),
                    finished_at=now,
                    updated_at=now,
                    error_type=error_type,
                    error_message=message,
                    error_details="",
                    error_non_retryable=True,
                    error_attempt=task.c.attempt,
                )
                .returning(task.c.id)
            )
            done = {r[0] for r in moved}
            cancelled += [
                NodeMove(r.id, wf_id, r.queue, r.type, state, _S.CANCELLED, r.run_at)
                for r in waiting
                if r.id in done
            ]
    for part in chunks([r.id for r in running]):
        await conn.execute(
            sa.update(task)
            .where(task.c.id.in_(part), state_is(_S.RUNNING, column=task.c.state))
            .values(cancel_requested=True, updated_at=now)
        )
    return cancelled, [LeaseRef(r.id, r.lease_id) for r in running]
