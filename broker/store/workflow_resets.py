"""Named queries that reshape a workflow: joining spawned children, and re-running nodes.

All run inside committer transactions (SpawnNodes, RetryWorkflow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import TaskRecord
from broker.core.task_state import TaskState
from broker.core.workflows import Counts, Decision, Rule, Verdict, WorkflowState, decide, outcome_of
from broker.store.dialect import is_pg
from broker.store.maintenance import _attempt_params
from broker.store.schema import task, task_attempt, task_result, wf_edge, wf_gate, workflow
from broker.store.tasks import _record
from broker.store.workflow_reads import workflow_edges
from broker.store.workflows import Edge, NodeMove, chunks, insert_edges

_S = TaskState
_STATE = {int(s): s for s in TaskState}  # faster than TaskState(n) per row
RERUN = frozenset({_S.FAILED, _S.DEAD, _S.EXPIRED, _S.CANCELLED})


async def node_name(conn: AsyncConnection, task_id: str) -> str:
    return str(await conn.scalar(sa.select(task.c.node).where(task.c.id == task_id)))


async def join_spawned(conn: AsyncConnection, spawner_id: str, child_ids: Sequence[str]) -> None:
    """Nodes that join what `spawner_id` spawns also wait for these new children.

    Their gates grow under the gate lock (PostgreSQL: taken in id order), in
    the transaction that inserts the children; the spawner is still running
    (its lease was checked), so the gates cannot have been sealed.
    """
    joins = sorted(
        r[0]
        for r in await conn.execute(
            sa.select(wf_edge.c.child_id).where(wf_edge.c.parent_id == spawner_id, wf_edge.c.joins)
        )
    )
    if not joins:
        return
    query = sa.select(wf_gate.c.task_id, wf_gate.c.rule).where(wf_gate.c.task_id.in_(joins))
    if is_pg(conn):
        query = query.order_by(wf_gate.c.task_id).with_for_update()
    rules = {r[0]: Rule(r[1]) for r in await conn.execute(query)}
    await conn.execute(
        sa.update(wf_gate)
        .where(wf_gate.c.task_id.in_(joins))
        .values(n_total=wf_gate.c.n_total + len(child_ids))
    )
    await insert_edges(
        conn,
        [Edge(j, child, rules[j], True, False) for j in joins for child in child_ids],
    )


# --- RetryWorkflow ----------------------------------------------------------------------------


@dataclass
class RetryPlan:
    """What RetryWorkflow re-runs, and what can be decided for it at once."""

    nodes: list[str] = field(default_factory=list)  # re-run, in creation order
    source: dict[str, TaskState] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)  # no parents: start at once
    decided: dict[str, Decision] = field(default_factory=dict)  # every parent kept its outcome
    gated: set[str] = field(default_factory=set)
    counts: dict[str, Counts] = field(default_factory=dict)  # gated nodes' recomputed gates


async def plan_retry(conn: AsyncConnection, wf_id: str) -> RetryPlan:
    """Failed, dead, expired and cancelled nodes, and everything below them that did not
    succeed; their gates recomputed from how the parents they keep ended."""
    rows = list(
        await conn.execute(
            sa.select(task.c.id, task.c.state)
            .where(task.c.workflow_id == wf_id)
            .order_by(task.c.id)
        )
    )
    state = {r.id: _STATE[r.state] for r in rows}
    edges = await workflow_edges(conn, wf_id)
    children: dict[str, list[str]] = {}
    parents: dict[str, list[tuple[str, Rule, bool, bool]]] = {}
    for child, parent, rule, gated, joins in edges:
        children.setdefault(parent, []).append(child)
        parents.setdefault(child, []).append((parent, rule, gated, joins))
    rerun = {i for i, s in state.items() if s in RERUN}
    todo = deque(rerun)
    while todo:
        for child in children.get(todo.popleft(), ()):
            if child not in rerun and state.get(child) is not _S.SUCCEEDED:
                rerun.add(child)
                todo.append(child)
    plan = RetryPlan()
    plan.nodes = [r.id for r in rows if r.id in rerun]
    plan.source = {i: state[i] for i in plan.nodes}
    for node in plan.nodes:
        _plan_node(plan, node, parents.get(node, []), rerun, state)
    return plan


def _plan_node(
    plan: RetryPlan,
    node: str,
    ps: list[tuple[str, Rule, bool, bool]],
    rerun: set[str],
    state: dict[str, TaskState],
) -> None:
    if not ps:
        plan.roots.append(node)
        return
    counts = Counts(len(ps))
    for parent, _, _, joins in ps:
        if parent in rerun:
            if joins:
                counts = replace(counts, open_spawners=counts.open_spawners + 1)
            continue
        done = outcome_of(state[parent])
        if done is not None:
            counts = counts.plus(done)
    rule, gated = ps[0][1], ps[0][2]
    if gated:
        plan.gated.add(node)
        plan.counts[node] = counts
    d = decide(rule, counts)
    if d.verdict is not Verdict.WAIT:
        plan.decided[node] = d


def _fields(c: Counts) -> dict[str, int]:
    return {
        "total": c.total, "ok": c.ok, "failed": c.failed, "cancelled": c.cancelled,
        "skipped": c.skipped, "open_spawners": c.open_spawners,
    }  # fmt: skip


async def reset(conn: AsyncConnection, wf_id: str, plan: RetryPlan, now: int) -> list[NodeMove]:
    """Put the plan's nodes back to BLOCKED with fresh budgets (their last attempts go into
    history, as RetryTask does), recompute their gates, and reopen the workflow."""
    moved: list[NodeMove] = []
    for part in chunks(plan.nodes):
        records = [
            _record(r) for r in await conn.execute(sa.select(task).where(task.c.id.in_(part)))
        ]
        await _history(conn, [r for r in records if r.attempt > 0])
        for r in records:
            result = await conn.execute(
                sa.update(task)
                .where(task.c.id == r.id, task.c.state == int(r.state))
                .values(
                    state=int(_S.BLOCKED),
                    finished_at=None,
                    cancel_requested=False,
                    attempt_base=task.c.attempt,
                    lost_count=0,
                    run_at=now,
                    expire_at=None,
                    updated_at=now,
                )
            )
            if result.rowcount:
                moved.append(NodeMove(r.id, wf_id, r.queue, r.type, r.state, _S.BLOCKED))
        await conn.execute(sa.delete(task_result).where(task_result.c.task_id.in_(part)))
    gates = [
        {"b_id": i, **{f"b_{k}": v for k, v in _fields(plan.counts[i]).items()}}
        for i in plan.nodes
        if i in plan.gated
    ]
    if gates:
        await conn.execute(
            sa.update(wf_gate)
            .where(wf_gate.c.task_id == sa.bindparam("b_id"))
            .values(
                n_total=sa.bindparam("b_total"),
                n_ok=sa.bindparam("b_ok"),
                n_failed=sa.bindparam("b_failed"),
                n_cancelled=sa.bindparam("b_cancelled"),
                n_skipped=sa.bindparam("b_skipped"),
                open_spawners=sa.bindparam("b_open_spawners"),
                decided_at=None,
            ),
            gates,
        )
    await conn.execute(
        sa.update(workflow)
        .where(workflow.c.id == wf_id)
        .values(
            state=int(WorkflowState.RUNNING),
            finished_at=None,
            generation=workflow.c.generation + 1,
            nodes_open=len(moved),
            # Every failed or cancelled node runs again: none is left to count.
            nodes_failed=0,
            nodes_cancelled=0,
            updated_at=now,
        )
    )
    return moved


async def _history(conn: AsyncConnection, records: list[TaskRecord]) -> None:
    if not records:
        return
    ids = [r.id for r in records]
    recorded = {
        (row.task_id, row.attempt)
        for row in await conn.execute(
            sa.select(task_attempt.c.task_id, task_attempt.c.attempt).where(
                task_attempt.c.task_id.in_(ids)
            )
        )
    }
    rows = [_attempt_params(r) for r in records if (r.id, r.attempt) not in recorded]
    if rows:
        await conn.execute(task_attempt.insert(), rows)
