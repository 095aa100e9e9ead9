"""The committer's ops for workflows: create, add nodes, spawn, cancel, retry, purge.

Each op runs in a committer transaction like any other write, so a workflow
and all its nodes, edges and gates commit together or not at all. Tasks go
in through `CreateTasks`, so a workflow's roots get exactly the hand-off,
accounting and wake-ups of submitted tasks. What a node's end does to the
rest of its workflow is engine/flows.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import NewTask
from broker.core.task_state import TaskState
from broker.core.workflows import (
    MAX_NODES_PER_WORKFLOW,
    RELEASE,
    Counts,
    Decision,
    NewNode,
    NewWorkflow,
    Rule,
    Tally,
    Verdict,
    WorkflowState,
    decide,
    outcome_of,
)
from broker.engine import flows
from broker.engine.ops import CreateTasks, Env, Op, _over_depth
from broker.store import leases, workflow_resets
from broker.store import workflow_reads as reads
from broker.store import workflows as store
from broker.store.workflows import Edge


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an op changed nothing: an ErrorInfo reason and a message for people."""

    reason: str
    message: str
    queue: str | None = None  # for QUEUE_FULL


@dataclass(frozen=True, slots=True)
class Done:
    workflow_id: str
    existing: bool = False  # a repeated request_id: the first request's workflow
    task_ids: tuple[str, ...] = ()
    refusal: Refusal | None = None
    leased: tuple[str, ...] = ()  # tasks handed straight to an idle worker at insert


class _Inserting(Op[Done]):
    """Ops that insert tasks through CreateTasks, whose after-commit effects they pass on."""

    order = 11

    def __init__(self) -> None:
        super().__init__()
        self._inner: list[CreateTasks] = []

    def after_commit(self, result: Done, env: Env) -> None:
        for inner in self._inner:
            inner.after_commit([], env)

    async def _insert(
        self,
        conn: AsyncConnection,
        env: Env,
        wf_id: str,
        nodes: Sequence[NewNode],
        existing: Mapping[str, tuple[str, TaskState]],
        now: int,
    ) -> None:
        """Insert nodes, their edges and gates; decide at once those whose parents already did."""
        self._inner = []  # a retried transaction applies the op again
        inner = CreateTasks([n.task for n in nodes])
        await CreateTasks.apply_all(conn, [inner], env, now)
        self._inner.append(inner)
        ids = {name: tid for name, (tid, _) in existing.items()}
        ids |= {n.name: n.task.id for n in nodes}
        edges: list[Edge] = []
        gates: list[tuple[str, Rule, Counts]] = []
        decisions: dict[str, Decision] = {}
        for n in nodes:
            if not n.parents:
                continue
            counts = Counts(len(n.parents))
            for p in n.parents:
                edges.append(Edge(n.task.id, ids[p], n.rule, n.gated, n.join_spawned))
                done = outcome_of(existing[p][1]) if p in existing else None
                if done is not None:
                    counts = counts.plus(done)
                elif n.join_spawned:
                    counts = replace(counts, open_spawners=counts.open_spawners + 1)
            if n.gated:
                gates.append((n.task.id, n.rule, counts))
            d = decide(n.rule, counts)
            if d.verdict is not Verdict.WAIT:
                decisions[n.task.id] = d
        await store.insert_edges(conn, edges)
        await store.insert_gates(conn, gates)
        if decisions:
            await store.mark_decided(conn, list(decisions), now)
            skipped = await flows.apply_decisions(conn, env, decisions, now)
            if skipped:
                await flows.settle(conn, env, skipped, now)
        flows.touched(env, [wf_id])


async def _refused_roots(
    conn: AsyncConnection, env: Env, tasks: Sequence[NewTask]
) -> Refusal | None:
    refused = await _over_depth(conn, [t for t in tasks if not t.blocked], env)
    if not refused:
        return None
    queue = next(t.queue for t in tasks if t.id in refused)
    settings = env.queues.get(queue)
    limit = settings.max_depth if settings else None
    return Refusal(
        "QUEUE_FULL", f"queue {queue!r} holds its maximum of {limit} waiting tasks", queue
    )


class CreateWorkflow(_Inserting):
    """A workflow, all its nodes, edges and gates; or, for a repeated request_id, nothing."""

    def __init__(self, wf: NewWorkflow) -> None:
        super().__init__()
        self.wf = wf

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CreateWorkflow], env: Env, now: int
    ) -> list[Done]:
        return [await op._apply(conn, env, now) for op in ops]

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> Done:
        wf = self.wf
        refusal = await _refused_roots(conn, env, [n.task for n in wf.nodes])
        if refusal is not None:
            return Done(wf.id, refusal=refusal)
        got = await store.insert_workflow(conn, wf, nodes=len(wf.nodes))
        if got != wf.id:
            return Done(got, existing=True)
        await self._insert(conn, env, wf.id, wf.nodes, {}, now)
        leased = tuple(self._inner[0].leased) if self._inner else ()
        return Done(wf.id, task_ids=tuple(n.task.id for n in wf.nodes), leased=leased)


class AddNodes(_Inserting):
    """Nodes added to a running workflow, possibly depending on existing nodes."""

    def __init__(self, workflow_id: str, nodes: Sequence[NewNode]) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.nodes = nodes

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[AddNodes], env: Env, now: int
    ) -> list[Done]:
        return [await op._apply(conn, env, now) for op in ops]

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> Done:
        wf_id = self.workflow_id
        names = [n.name for n in self.nodes]
        wanted = sorted({p for n in self.nodes for p in n.parents} - set(names))
        # Lock the existing parents (one finishing meanwhile is counted once: lock_nodes),
        # and before the workflow's row: a node finishing holds its own row, then takes
        # its workflow's (to count it), so the other order could deadlock with it.
        parents = await reads.node_ids(conn, wf_id, wanted)
        states = await store.lock_nodes(conn, [parents[p][0] for p in wanted if p in parents])
        row = (await store.workflow_rows(conn, [wf_id], lock=True)).get(wf_id)
        if row is None:
            return Done(wf_id, refusal=Refusal("WORKFLOW_NOT_FOUND", f"no workflow {wf_id}"))
        if row.finished:
            return Done(wf_id, refusal=_finished(wf_id))
        # Under the workflow's lock: which of the new names exist already. (A parent added
        # by another call since the read above is not seen: this call is ordered first.)
        found = parents | await reads.node_ids(conn, wf_id, names)
        refusal = _check_added(self.nodes, found, wanted)
        if refusal is None and row.nodes_total + len(self.nodes) > MAX_NODES_PER_WORKFLOW:
            refusal = Refusal(
                "WORKFLOW_TOO_LARGE", f"a workflow holds at most {MAX_NODES_PER_WORKFLOW} nodes"
            )
        refusal = refusal or await _refused_roots(conn, env, [n.task for n in self.nodes])
        if refusal is not None:
            return Done(wf_id, refusal=refusal)
        existing = {p: (found[p][0], states[found[p][0]][0]) for p in wanted}
        late = [
            p for p in wanted if existing[p][1] is TaskState.RUNNING or existing[p][1].is_terminal
        ]
        joined = [n.name for n in self.nodes if n.join_spawned and set(n.parents) & set(late)]
        if joined:
            return Done(wf_id, refusal=Refusal(
                "INVALID_WORKFLOW",
                f"node {joined[0]!r} joins what its parents spawn, but a parent has started "
                "already; join only parents that have not started",
            ))  # fmt: skip
        await store.account(conn, {wf_id: Tally(added=len(self.nodes))}, now)
        await self._insert(conn, env, wf_id, self.nodes, existing, now)
        return Done(wf_id, task_ids=tuple(n.task.id for n in self.nodes))


def _finished(wf_id: str) -> Refusal:
    return Refusal(
        "WORKFLOW_FINISHED",
        f"workflow {wf_id} has finished (every node did); start a new one or retry it",
    )


def _check_added(
    nodes: Sequence[NewNode],
    found: Mapping[str, tuple[str, TaskState]],
    wanted: Sequence[str],
) -> Refusal | None:
    taken = [n.name for n in nodes if n.name in found]
    if taken:
        return Refusal("DUPLICATE_NODE", f"the workflow already has a node named {taken[0]!r}")
    unknown = [p for p in wanted if p not in found]
    if unknown:
        return Refusal(
            "UNKNOWN_DEPENDENCY",
            f"a node depends on {unknown[0]!r}, which is no node of the workflow",
        )
    return None


@dataclass(frozen=True, slots=True)
class Spawned:
    workflow_id: str = ""
    task_ids: tuple[str, ...] = ()
    refusal: Refusal | None = None


class SpawnNodes(Op[Spawned]):
    """Children a running node adds to its workflow, fenced by the node's lease."""

    order = 11

    def __init__(
        self, task_id: str, lease_id: int, children: Sequence[tuple[str, NewTask]]
    ) -> None:
        super().__init__()
        self.task_id = task_id
        self.lease_id = lease_id
        self.children = children
        self._inner: list[CreateTasks] = []

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[SpawnNodes], env: Env, now: int
    ) -> list[Spawned]:
        return [await op._apply(conn, env, now) for op in ops]

    def after_commit(self, result: Spawned, env: Env) -> None:
        for inner in self._inner:
            inner.after_commit([], env)

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> Spawned:
        self._inner = []
        row = (await leases.lease_rows(conn, [self.task_id])).get(self.task_id)
        if not leases.holds(row, self.lease_id):
            return Spawned(refusal=Refusal("LEASE_LOST", "the lease is no longer held"))
        assert row is not None
        wf_id = row.workflow_id
        if wf_id is None:
            message = f"task {self.task_id} is not a workflow node; only nodes spawn"
            return Spawned(refusal=Refusal("NOT_A_WORKFLOW_NODE", message))
        spawner = await workflow_resets.node_name(conn, self.task_id)
        names = [f"{spawner}/{key}" for key, _ in self.children]
        found = await reads.node_ids(conn, wf_id, names)
        new = [
            replace(t, workflow_id=wf_id, node=name)
            for (_, t), name in zip(self.children, names, strict=True)
            if name not in found
        ]
        ids = tuple(found[name][0] if name in found else "" for name in names)
        if new:
            refusal = await self._add(conn, env, wf_id, new, now)
            if refusal is not None:
                return Spawned(refusal=refusal)
        made = iter(t.id for t in new)
        return Spawned(wf_id, tuple(i or next(made) for i in ids))

    async def _add(
        self, conn: AsyncConnection, env: Env, wf_id: str, new: list[NewTask], now: int
    ) -> Refusal | None:
        wf = (await store.workflow_rows(conn, [wf_id])).get(wf_id)
        if wf is not None and wf.nodes_total + len(new) > MAX_NODES_PER_WORKFLOW:
            return Refusal(
                "WORKFLOW_TOO_LARGE", f"a workflow holds at most {MAX_NODES_PER_WORKFLOW} nodes"
            )
        refusal = await _refused_roots(conn, env, new)
        if refusal is not None:
            return refusal
        await store.account(conn, {wf_id: Tally(added=len(new))}, now)
        inner = CreateTasks(new)
        await CreateTasks.apply_all(conn, [inner], env, now)
        self._inner.append(inner)
        await workflow_resets.join_spawned(conn, self.task_id, [t.id for t in new])
        flows.touched(env, [wf_id])
        return None


class CancelWorkflow(Op["WorkflowState | Refusal"]):
    """Cancel a workflow's unfinished nodes; the workflow is CANCELLED (unless it failed)."""

    order = 21

    def __init__(self, workflow_id: str, reason: str) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.reason = reason

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CancelWorkflow], env: Env, now: int
    ) -> list[WorkflowState | Refusal]:
        return [await op._apply(conn, env, now) for op in ops]

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> WorkflowState | Refusal:
        wf_id = self.workflow_id
        row = (await store.workflow_rows(conn, [wf_id], lock=True)).get(wf_id)
        if row is None:
            return Refusal("WORKFLOW_NOT_FOUND", f"no workflow {wf_id}")
        if row.finished:
            if row.state is WorkflowState.CANCELLED:
                return row.state
            return _finished(wf_id)
        await store.set_state(conn, wf_id, WorkflowState.CANCELLED, now)
        cancelled = await flows.cancel_all(
            conn, env, wf_id, now,
            error_type="Cancelled", message=self.reason or "the workflow was cancelled",
            spare=False,
        )  # fmt: skip
        if cancelled:
            await flows.settle(conn, env, cancelled, now)
        return WorkflowState.CANCELLED if row.state is WorkflowState.RUNNING else row.state


class RetryWorkflow(Op["int | Refusal"]):
    """Re-run a finished workflow's failed and cancelled nodes and what depends on them.

    The result is how many nodes run again.
    """

    order = 81

    def __init__(self, workflow_id: str) -> None:
        super().__init__()
        self.workflow_id = workflow_id

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[RetryWorkflow], env: Env, now: int
    ) -> list[int | Refusal]:
        return [await op._apply(conn, env, now) for op in ops]

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> int | Refusal:
        wf_id = self.workflow_id
        row = (await store.workflow_rows(conn, [wf_id], lock=True)).get(wf_id)
        if row is None:
            return Refusal("WORKFLOW_NOT_FOUND", f"no workflow {wf_id}")
        if not row.finished or row.state is WorkflowState.SUCCEEDED:
            what = "succeeded" if row.finished else "still has unfinished nodes"
            return Refusal(
                "WORKFLOW_NOT_RETRYABLE",
                f"workflow {wf_id} {what}; only a finished, failed or cancelled workflow is "
                "retried",
            )
        plan = await workflow_resets.plan_retry(conn, wf_id)
        if not plan.nodes:  # cancelled, yet every node succeeded (a result beat the cancel)
            return Refusal(
                "WORKFLOW_NOT_RETRYABLE",
                f"no node of workflow {wf_id} failed or was cancelled: nothing to re-run",
            )
        for m in await workflow_resets.reset(conn, wf_id, plan, now):
            env.ledger.moved(m.queue, m.source, TaskState.BLOCKED)
            env.journal.task(m.task_id, m.queue, m.type, TaskState.BLOCKED, m.source, 0)
        decisions = {i: RELEASE for i in plan.roots} | plan.decided
        await store.mark_decided(conn, [i for i in plan.decided if i in plan.gated], now)
        skipped = await flows.apply_decisions(conn, env, decisions, now)
        if skipped:
            await flows.settle(conn, env, skipped, now)
        flows.touched(env, [wf_id], plan.nodes)
        return len(plan.nodes)


class PurgeWorkflows(Op[int]):
    """Delete finished workflows, with all their nodes, once older than their state's retention."""

    order = 93

    def __init__(self, cutoffs: dict[WorkflowState, int], limit: int = 100) -> None:
        super().__init__()
        self.cutoffs = cutoffs
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[PurgeWorkflows], env: Env, now: int
    ) -> list[int]:
        out = []
        for op in ops:
            count, deleted = await reads.purge_workflows(conn, op.cutoffs, limit=op.limit)
            for (queue, state), n in deleted.items():
                env.ledger.moved(queue, state, None, n)
            out.append(count)
        return out


class SaveTemplate(Op["tuple[reads.TemplateRow, bool]"]):
    """Register a template version (a no-op returning the newest for an unchanged spec)."""

    order = 17

    def __init__(self, name: str, spec: bytes, spec_hash: str) -> None:
        super().__init__()
        self.name = name
        self.spec = spec
        self.spec_hash = spec_hash

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[SaveTemplate], env: Env, now: int
    ) -> list[tuple[reads.TemplateRow, bool]]:
        return [await reads.save_template(conn, o.name, o.spec, o.spec_hash, now) for o in ops]
