"""Workflow writes against the database (SQLite and PostgreSQL): what plain tasks pay, what a
gate counts, and that a node is released once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import NewTask
from broker.core.task_state import TaskState
from broker.core.workflows import Counts, FailurePolicy, NewWorkflow, Rule, Tally
from broker.engine import flows
from broker.engine.ops import Env
from broker.ids import new_ulid
from broker.store import tasks, workflows
from broker.store.database import Database
from broker.store.leases import Ended
from broker.store.workflows import Edge

NOW = 1_800_000_000_000_000


def _task(
    node: str | None = None, workflow_id: str | None = None, blocked: bool = False
) -> NewTask:
    return NewTask(
        id=new_ulid(), type="t", queue="q", priority=0, payload=None, labels=None,
        run_at=NOW, created_at=NOW, max_attempts=3, request_id=None,
        workflow_id=workflow_id, node=node, blocked=blocked,
    )  # fmt: skip


@contextmanager
def counting(conn: AsyncConnection) -> Iterator[list[str]]:
    """The SQL statements the connection runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    engine = conn.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def test_ending_plain_tasks_runs_no_workflow_statement(db: Database) -> None:
    plain = [Ended(new_ulid(), "q", TaskState.SUCCEEDED, None, type="t") for _ in range(50)]
    node = Ended(new_ulid(), "q", TaskState.SUCCEEDED, None, type="t", workflow_id=new_ulid())
    # All settling may touch of the environment, for a node without children or workflow.
    env = cast(Env, SimpleNamespace(after_commit=lambda effect: None))
    async with db.writer.begin() as conn:
        with counting(conn) as statements:
            await flows.settle_ended(conn, env, [*plain, None], NOW)
        assert statements == []
        with counting(conn) as statements:
            await flows.settle_ended(conn, env, [node], NOW)
        assert len(statements) >= 2  # a node: the edge probe, its workflow's counters


async def _workflow(conn: AsyncConnection, nodes: int) -> str:
    wf = NewWorkflow(new_ulid(), "w", [], FailurePolicy.CONTINUE, created_at=NOW)
    return await workflows.insert_workflow(conn, wf, nodes=nodes)


async def test_a_gate_counts_every_parent_and_a_node_is_released_once(db: Database) -> None:
    async with db.writer.begin() as conn:
        wf_id = await _workflow(conn, 3)
        a, b = _task("a", wf_id), _task("b", wf_id)
        join = _task("j", wf_id, blocked=True)
        await tasks.insert_tasks(conn, [a, b, join])
        await workflows.insert_edges(
            conn, [Edge(join.id, a.id, Rule.ALL_SUCCEEDED, True, False),
                   Edge(join.id, b.id, Rule.ALL_SUCCEEDED, True, False)],
        )  # fmt: skip
        await workflows.insert_gates(conn, [(join.id, Rule.ALL_SUCCEEDED, Counts(2))])

        first = await workflows.count_into_gates(conn, {join.id: (1, 0, 0, 0, 0)})
        assert first[join.id].counts == Counts(2, ok=1) and not first[join.id].decided
        second = await workflows.count_into_gates(conn, {join.id: (1, 0, 0, 0, 0)})
        assert second[join.id].counts == Counts(2, ok=2)
        await workflows.mark_decided(conn, [join.id], NOW)
        assert (await workflows.read_gates(conn, [join.id]))[join.id].decided

        released = await workflows.release(conn, [join.id], NOW + 1)
        again = await workflows.release(conn, [join.id], NOW + 2)
        assert [(m.task_id, m.state) for m in released] == [(join.id, TaskState.PENDING)]
        assert again == []  # the compare-and-set on BLOCKED: once only
        skipped = await workflows.skip(conn, [join.id], reason="x", message="x", now=NOW)
        assert skipped == []


async def test_counting_a_workflow_to_zero_open_nodes_is_seen_by_the_counter(
    db: Database,
) -> None:
    async with db.writer.begin() as conn:
        wf_id = await _workflow(conn, 2)
        rows = await workflows.account(conn, {wf_id: Tally(finished=1)}, NOW)
        assert rows[wf_id].nodes_open == 1
        rows = await workflows.account(conn, {wf_id: Tally(finished=1, failed=1)}, NOW)
        assert (rows[wf_id].nodes_open, rows[wf_id].nodes_failed) == (0, 1)
