"""Settling workflow nodes: what a node's move to a final state does to its children and workflow.

Every path that finishes a task (a completion, a lost lease past its budget,
an execution timeout, an expiry, a cancel) calls `settle` for the workflow
nodes among them, inside the same transaction, after the compare-and-set
that moved them. Settling counts each finished parent into its children
(store/workflows.py says why that is exactly once), releases or skips the
children whose rule decided — skipped children are final too, so they are
settled in turn — and counts the finished nodes into their workflows, which
finish when nothing is left open, or fail fast.

Plain tasks never get here: `settle_ended` looks at one attribute per ended
lease and runs no statement unless a workflow node is among them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import LeaseRef
from broker.core.task_state import TaskState
from broker.core.workflows import (
    SKIP_MESSAGES,
    Counts,
    Decision,
    FailurePolicy,
    Tally,
    Verdict,
    WorkflowState,
    decide,
    final_state,
    outcome_of,
)
from broker.engine.dispatcher import StopReason
from broker.store import workflows as store
from broker.store.leases import Ended
from broker.store.workflows import NodeMove

if TYPE_CHECKING:
    from broker.engine.ops import Env

__all__ = ["NodeMove", "apply_decisions", "settle", "settle_ended", "stop_later", "touched"]

FAIL_FAST_MESSAGE = "another node of the workflow failed (failure policy: fail fast)"


async def settle_ended(
    conn: AsyncConnection, env: Env, results: Sequence[Ended | None], now: int
) -> None:
    """Settle the workflow nodes among ended leases (nothing to do for plain tasks)."""
    moves: list[NodeMove] = []
    others: set[str] = set()
    for e in results:
        if e is None or e.workflow_id is None:
            continue
        if e.state.is_terminal:
            moves.append(
                NodeMove(e.task_id, e.workflow_id, e.queue, e.type, TaskState.RUNNING, e.state)
            )
        else:
            others.add(e.workflow_id)  # back to waiting: only watchers care
    if others:
        touched(env, others)
    if moves:
        await settle(conn, env, moves, now)


async def settle(conn: AsyncConnection, env: Env, moves: Sequence[NodeMove], now: int) -> None:
    """Settle nodes that reached a final state in this transaction, and what that decides."""
    pending = list(moves)
    while pending:
        touched(env, [m.workflow_id for m in pending], [m.task_id for m in pending])
        follow = await _children(conn, env, pending, now)
        follow += await _workflows(conn, env, pending, now)
        pending = follow


async def _children(
    conn: AsyncConnection, env: Env, moves: Sequence[NodeMove], now: int
) -> list[NodeMove]:
    """Count finished parents into their children; release or skip those decided."""
    outcome = {m.task_id: outcome_of(m.state) for m in moves}
    edges = await store.edges_from(conn, list(outcome))
    if not edges:
        return []
    decisions: dict[str, Decision] = {}
    deltas: dict[str, list[int]] = {}
    for e in edges:
        o = outcome[e.parent_id]
        assert o is not None
        if not e.gated:  # the child's only parent: this move decides it
            decisions[e.child_id] = decide(e.rule, Counts(1).plus(o))
            continue
        delta = deltas.setdefault(e.child_id, [0, 0, 0, 0, 0])
        delta[o - 1] += 1
        delta[4] += e.joins  # a spawner finished: no more children to join
    if deltas:
        counted = {k: (v[0], v[1], v[2], v[3], v[4]) for k, v in deltas.items()}
        gates = await store.count_into_gates(conn, counted)
        decided = []
        for child, gate in gates.items():
            if gate.decided:
                continue
            d = decide(gate.rule, gate.counts)
            if d.verdict is not Verdict.WAIT:
                decisions[child] = d
                decided.append(child)
        await store.mark_decided(conn, decided, now)
    return await apply_decisions(conn, env, decisions, now)


async def apply_decisions(
    conn: AsyncConnection, env: Env, decisions: Mapping[str, Decision], now: int
) -> list[NodeMove]:
    """Release and skip BLOCKED nodes; returns the skipped ones (final: settle them next)."""
    release = [i for i, d in decisions.items() if d.verdict is Verdict.RELEASE]
    skips: dict[str, list[str]] = defaultdict(list)
    for i, d in decisions.items():
        if d.verdict is Verdict.SKIP:
            skips[d.reason].append(i)
    released = await store.release(conn, release, now) if release else []
    for m in released:
        env.ledger.moved(m.queue, TaskState.BLOCKED, m.state)
        env.journal.task(m.task_id, m.queue, m.type, m.state, TaskState.BLOCKED, 0)
    env.ready(m.queue for m in released if m.state is TaskState.PENDING)
    later = [m.run_at for m in released if m.state is TaskState.SCHEDULED]
    if later:
        env.due.due_at(min(later))
    skipped: list[NodeMove] = []
    for reason, ids in skips.items():
        skipped += await store.skip(
            conn, ids, reason=reason, message=SKIP_MESSAGES.get(reason, reason), now=now
        )
    for m in skipped:
        env.ledger.moved(m.queue, TaskState.BLOCKED, TaskState.SKIPPED)
        env.journal.task(m.task_id, m.queue, m.type, TaskState.SKIPPED, TaskState.BLOCKED, 0)
    touched(env, [m.workflow_id for m in released], [m.task_id for m in released])
    return skipped


async def _workflows(
    conn: AsyncConnection, env: Env, moves: Sequence[NodeMove], now: int
) -> list[NodeMove]:
    """Count finished nodes into their workflows: finish them, or fail them fast."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    for m in moves:
        tallies[m.workflow_id].count(m.state)
    rows = await store.account(conn, tallies, now)
    follow: list[NodeMove] = []
    for wf_id, row in rows.items():
        fail_fast = row.failure_policy == FailurePolicy.FAIL_FAST
        if fail_fast and row.state is WorkflowState.RUNNING and row.nodes_failed:
            follow += await fail(conn, env, wf_id, now)
        # Nodes cancelled by a fail-fast were open: they finish it in the next round.
        if row.nodes_open == 0 and not row.finished:
            await store.finish(conn, wf_id, final_state(row.nodes_failed, row.nodes_cancelled), now)
    return follow


async def fail(conn: AsyncConnection, env: Env, wf_id: str, now: int) -> list[NodeMove]:
    """FAIL_FAST: the workflow is FAILED now; its unstarted nodes are cancelled, running ones
    asked to stop (clean-up nodes are spared)."""
    if not await store.set_state(conn, wf_id, WorkflowState.FAILED, now):
        return []
    return await cancel_all(
        conn, env, wf_id, now, error_type="WorkflowFailed", message=FAIL_FAST_MESSAGE, spare=True
    )


async def cancel_all(
    conn: AsyncConnection,
    env: Env,
    wf_id: str,
    now: int,
    *,
    error_type: str,
    message: str,
    spare: bool,
) -> list[NodeMove]:
    """Cancel a workflow's unfinished nodes; returns those now final (to settle)."""
    cancelled, running = await store.cancel_nodes(
        conn, wf_id, error_type=error_type, message=message, spare_cleanup=spare, now=now
    )
    for m in cancelled:
        env.ledger.moved(m.queue, m.source, TaskState.CANCELLED)
        env.ledger.finished_waiting(m.queue, m.type, now, TaskState.CANCELLED)
        env.journal.task(m.task_id, m.queue, m.type, TaskState.CANCELLED, m.source, 0)
    for ref in running:
        env.notices.cancel(ref)
    stop_later(env, running)
    touched(env, [wf_id], [r.task_id for r in running])
    return cancelled


def stop_later(env: Env, refs: Sequence[LeaseRef]) -> None:
    """Once committed, tell the workers holding these leases to stop (as CancelTask does)."""
    if refs:
        env.after_commit(lambda: env.dispatcher.stop(refs, StopReason.CANCEL_REQUESTED))


def touched(env: Env, workflow_ids: Iterable[str], task_ids: Iterable[str] = ()) -> None:
    """Once committed, wake WatchWorkflow (and WatchTask) callers of these."""
    ids = list(dict.fromkeys([*workflow_ids, *task_ids]))
    if ids:
        env.after_commit(lambda: env.events.state_changed(ids))
