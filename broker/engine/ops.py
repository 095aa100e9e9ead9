"""The writes the committer knows how to batch: submission, cancellation, leases.

Each op kind applies all of its queued instances with as few statements as
possible, and states what must happen once the transaction is durable (waking
watchers, telling workers to stop, handing tasks to the promoter).
Time-driven and operator ops live in `upkeep.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.clock import Clock
from broker.core.models import (
    Claimed,
    Holder,
    LeaseEnd,
    LeaseRef,
    LossReason,
    Lost,
    NewTask,
    Released,
)
from broker.core.retry import RetryPolicy
from broker.core.task_state import WAITING, TaskState
from broker.engine import flows
from broker.engine.dispatcher import Dispatcher, StopReason
from broker.engine.journal import Journal
from broker.engine.ledger import Ledger
from broker.engine.metrics import MetricsSink, NoMetrics
from broker.engine.notices import Notices
from broker.engine.queue_registry import QueueRegistry
from broker.engine.storage import StorageHealth
from broker.store import leases, queues, tasks

R = TypeVar("R")
T = TypeVar("T")


class EventSink(Protocol):
    def state_changed(self, task_ids: Sequence[str]) -> None: ...

    def logged(self, task_ids: Sequence[str]) -> None: ...


class DueSink(Protocol):
    def due_at(self, run_at: int) -> None: ...


@dataclass
class Env:
    """What ops may touch besides the database."""

    clock: Clock
    policy: RetryPolicy  # the broker's default, for tasks without their own
    dispatcher: Dispatcher
    events: EventSink
    due: DueSink
    notices: Notices
    queues: QueueRegistry
    journal: Journal  # the event stream (WatchEvents)
    ledger: Ledger = field(default_factory=Ledger)
    metrics: MetricsSink = field(default_factory=NoMetrics)
    # Effects of the current transaction to run once it commits (dropped if it
    # fails), for work shared by ops of several kinds (engine/flows.py).
    deferred: list[Callable[[], None]] = field(default_factory=list)
    storage: StorageHealth | None = None  # made from the clock when not given

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = StorageHealth(self.clock)

    def ready(self, queues: Iterable[str]) -> None:
        """Tasks became claimable in these queues: wake this replica and the others."""
        queues = set(queues)
        if queues:
            self.dispatcher.mark_ready(queues)
            self.notices.ready(queues)

    def after_commit(self, effect: Callable[[], None]) -> None:
        self.deferred.append(effect)


class Op(Generic[R]):
    """A unit of work for the committer. Ops of one class are applied together."""

    # Kinds apply in this order within a transaction.
    order: ClassVar[int] = 0

    def __init__(self) -> None:
        self.future: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[Self], env: Env, now: int
    ) -> Sequence[R]:
        """Apply every op of this class; return one result per op, in order."""
        raise NotImplementedError

    def after_commit(self, result: R, env: Env) -> None:
        """Effects that must wait until the transaction is durable."""


def split(items_per_op: Sequence[int], results: Sequence[T]) -> list[list[T]]:
    out: list[list[T]] = []
    start = 0
    for n in items_per_op:
        out.append(list(results[start : start + n]))
        start += n
    return out


class CreateTasks(Op[list[str]]):
    """Insert tasks; the result holds the id now in each slot (see insert_tasks).

    A slot is "" when the task was refused because its queue is at its
    max_depth.
    """

    order = 10

    def __init__(self, new: Sequence[NewTask]) -> None:
        super().__init__()
        self.tasks = new
        # Tasks of this op that were inserted already leased to an idle worker.
        self.leased: dict[str, Claimed] = {}
        self.new_queues: set[str] = set()

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CreateTasks], env: Env, now: int
    ) -> list[list[str]]:
        offered = [t for op in ops for t in op.tasks]
        unknown = {t.queue for t in offered if not env.queues.known(t.queue)}
        if unknown:
            await queues.ensure_queues(conn, unknown, now)
        refused = await _over_depth(conn, offered, env)
        new = [t for t in offered if t.id not in refused]
        fresh = [t for t in new if t.request_id is None and t.initial_state is TaskState.PENDING]
        leased = env.dispatcher.hand_off(fresh, now) if fresh else {}
        for op in ops:
            op.leased = {t.id: leased[t.id] for t in op.tasks if t.id in leased}
            op.new_queues = unknown
        inserted = dict(
            zip((t.id for t in new), await tasks.insert_tasks(conn, new, leased), strict=True)
        )
        ids = [inserted.get(t.id, "") for t in offered]
        for t in new:
            if inserted[t.id] == t.id:  # inserted, not deduplicated
                _account_insert(env, t, t.id in leased, now)
                _journal_insert(env, t, t.id in leased)
        ready = {
            t.queue for t in new if t.initial_state is TaskState.PENDING and t.id not in leased
        }
        env.ready(ready)
        delayed = [t.run_at for t in new if t.initial_state is TaskState.SCHEDULED]
        if delayed:
            env.due.due_at(min(delayed))
        return split([len(op.tasks) for op in ops], ids)

    def after_commit(self, result: list[str], env: Env) -> None:
        env.queues.learn(self.new_queues, env.clock.now_us())


async def _over_depth(conn: AsyncConnection, offered: Sequence[NewTask], env: Env) -> set[str]:
    """Ids of tasks refused because their queue would pass its max_depth."""
    refused: set[str] = set()
    # Blocked workflow nodes wait for parents, not for workers: their release
    # must never be refused, so they are not counted against the depth.
    offered = [t for t in offered if not t.blocked]
    for name in {t.queue for t in offered}:
        settings = env.queues.get(name)
        if settings is None or settings.max_depth is None:
            continue
        await queues.lock(conn, name)
        room = settings.max_depth - await queues.waiting(conn, name)
        for t in (t for t in offered if t.queue == name):
            if room > 0:
                room -= 1
            else:
                refused.add(t.id)
    return refused


def _journal_insert(env: Env, t: NewTask, leased: bool) -> None:
    state = TaskState.RUNNING if leased else t.initial_state
    env.journal.task(t.id, t.queue, t.type, state, None, int(leased), (t.owner, t.labels))


def _account_insert(env: Env, t: NewTask, leased: bool, now: int) -> None:
    env.ledger.moved(t.queue, None, TaskState.RUNNING if leased else t.initial_state)
    env.ledger.submitted(t.queue, t.type, now)
    if leased:
        env.ledger.started(t.queue, t.type, now, now - t.run_at)


class CancelTask(Op[tasks.CancelOutcome]):
    order = 20

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.reason = reason

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CancelTask], env: Env, now: int
    ) -> list[tasks.CancelOutcome]:
        outcomes = [await tasks.cancel(conn, op.task_id, reason=op.reason, now=now) for op in ops]
        nodes: list[flows.NodeMove] = []
        for op, o in zip(ops, outcomes, strict=True):
            if o.lease is not None:
                env.notices.cancel(o.lease)
            waited = o.source in WAITING or o.source is TaskState.BLOCKED
            if waited and o.state is TaskState.CANCELLED and o.source is not None:
                env.ledger.moved(o.queue, o.source, TaskState.CANCELLED)
                env.ledger.finished_waiting(o.queue, o.type, now, TaskState.CANCELLED)
                env.journal.task(op.task_id, o.queue, o.type, o.state, o.source, o.attempt)
                if o.workflow_id is not None:
                    nodes.append(
                        flows.NodeMove(
                            op.task_id, o.workflow_id, o.queue, o.type, o.source, o.state
                        )
                    )
        if nodes:
            await flows.settle(conn, env, nodes, now)
        return outcomes

    def after_commit(self, result: tasks.CancelOutcome, env: Env) -> None:
        if result.lease is not None:
            env.dispatcher.stop([result.lease], StopReason.CANCEL_REQUESTED)
        if result.found:
            env.events.state_changed([self.task_id])


class ExtendLeases(Op[dict[str, leases.ExtendResult]]):
    order = 30

    def __init__(self, items: Sequence[leases.Extension]) -> None:
        super().__init__()
        self.items = items

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ExtendLeases], env: Env, now: int
    ) -> list[dict[str, leases.ExtendResult]]:
        results = await leases.extend_leases(conn, [i for op in ops for i in op.items], now)
        restored(env, [(i, r.queue, r.type, r.attempt) for i, r in results.items() if r.restored])
        for op in ops:
            for i in op.items:
                result = results[i.task_id]
                if i.progress is not None and result.ok:
                    env.journal.progress(i.task_id, result.queue, result.type, i.progress)
        return [{i.task_id: results[i.task_id] for i in op.items} for op in ops]

    def after_commit(self, result: dict[str, leases.ExtendResult], env: Env) -> None:
        logged = [i.task_id for i in self.items if i.logs and result[i.task_id].ok]
        if logged:
            env.events.logged(logged)
        back = [task_id for task_id, r in result.items() if r.restored]
        if back:
            env.events.state_changed(back)


def restored(env: Env, back: Iterable[tuple[str, str, str, int]]) -> None:
    """Lapsed leases came back (task id, queue, type, attempt): their tasks run again."""
    for task_id, queue, type_, attempt in back:
        env.ledger.moved(queue, TaskState.PENDING, TaskState.RUNNING)
        env.journal.task(task_id, queue, type_, TaskState.RUNNING, TaskState.PENDING, attempt)


class EndLeases(Op[list[leases.Ended | None]]):
    """Record how leases ended; a None result slot means the lease was no longer held."""

    order = 40

    def __init__(self, ends: Sequence[LeaseEnd]) -> None:
        super().__init__()
        self.ends = ends

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[EndLeases], env: Env, now: int
    ) -> list[list[leases.Ended | None]]:
        ends = [e for op in ops for e in op.ends]
        results = await leases.end_leases(conn, ends, now=now, policy=env.policy)
        route_ended(results, env, now)
        await flows.settle_ended(conn, env, results, now)
        return split([len(op.ends) for op in ops], results)

    def after_commit(self, result: list[leases.Ended | None], env: Env) -> None:
        ended = [
            LeaseRef(end.task_id, end.lease_id)
            for end, outcome in zip(self.ends, result, strict=True)
            if outcome is not None
        ]
        env.dispatcher.ended(ended)
        env.events.state_changed([r.task_id for r in ended])


def route_ended(results: Sequence[leases.Ended | None], env: Env, now: int) -> None:
    """Account for ended leases; tasks coming back wake the dispatcher or the promoter."""
    for e in results:
        if e is None:
            continue
        env.ledger.moved(e.queue, e.source, e.state)
        env.journal.task(e.task_id, e.queue, e.type, e.state, e.source, e.attempt)
        if e.counted:
            run_us = None if e.started_at is None else now - e.started_at
            env.ledger.ended(e.queue, e.type, now, e.state, run_us, e.lost)
    # A task leaving RUNNING frees room in a queue with limits.
    ready = {
        e.queue
        for e in results
        if e is not None and (e.state is TaskState.PENDING or env.queues.limited(e.queue))
    }
    env.ready(ready)
    waits = [
        e.run_at
        for e in results
        if e is not None and e.state is TaskState.RETRYING and e.run_at is not None
    ]
    if waits:
        env.due.due_at(min(waits))


def released(ref: LeaseRef) -> LeaseEnd:
    return LeaseEnd(ref.task_id, ref.lease_id, Released())


def disconnected(ref: LeaseRef) -> LeaseEnd:
    return LeaseEnd(ref.task_id, ref.lease_id, Lost(LossReason.DISCONNECTED))


class AdoptLeases(Op[dict[str, leases.Adopted]]):
    """Re-attach the leases a reconnecting worker still holds, lapsed ones included."""

    order = 50

    def __init__(self, refs: Sequence[LeaseRef], worker_id: str, by: Holder | None = None) -> None:
        super().__init__()
        self.refs = refs
        self.worker_id = worker_id
        self.by = by  # only leases this identity may act on are kept

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[AdoptLeases], env: Env, now: int
    ) -> list[dict[str, leases.Adopted]]:
        out = []
        for op in ops:
            kept = await leases.adopt_leases(
                conn, op.refs, worker_id=op.worker_id, now=now, by=op.by
            )
            restored(env, [(i, a.queue, a.type, a.attempt) for i, a in kept.items() if a.restored])
            out.append(kept)
        return out

    def after_commit(self, result: dict[str, leases.Adopted], env: Env) -> None:
        back = [task_id for task_id, a in result.items() if a.restored]
        if back:
            env.events.state_changed(back)
