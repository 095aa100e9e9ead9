"""The writes the committer knows how to batch, one class per kind.

Each op kind applies all of its queued instances with as few statements as
possible, and states what must happen once the transaction is durable (waking
watchers, telling workers to stop, handing tasks to the promoter).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.clock import Clock
from broker.core.models import LeaseEnd, LeaseRef, LossReason, Lost, NewTask, Released
from broker.core.retry import RetryPolicy
from broker.core.task_state import TaskState
from broker.loops.dispatcher import Dispatcher, StopReason
from broker.store import tasks as store

R = TypeVar("R")


class EventSink(Protocol):
    def state_changed(self, task_ids: Sequence[str]) -> None: ...


class DueSink(Protocol):
    def due_at(self, run_at: int) -> None: ...


@dataclass
class Env:
    """What ops may touch besides the database."""

    clock: Clock
    policy: RetryPolicy
    dispatcher: Dispatcher
    events: EventSink
    due: DueSink
    lease_duration_us: int


class Op(Generic[R]):
    """A unit of work for the committer. Ops of one class are applied together."""

    # Kinds apply in this order within a transaction.
    order: ClassVar[int] = 0

    def __init__(self) -> None:
        self.future: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[Any], env: Env, now: int
    ) -> Sequence[Any]:
        """Apply every op of this class; return one result per op, in order."""
        raise NotImplementedError

    def after_commit(self, result: R, env: Env) -> None:
        """Effects that must wait until the transaction is durable."""


def _split(items_per_op: Sequence[int], results: Sequence[Any]) -> list[list[Any]]:
    out, start = [], 0
    for n in items_per_op:
        out.append(list(results[start : start + n]))
        start += n
    return out


class CreateTasks(Op[list[str]]):
    """Insert tasks; the result holds the id now in each slot (see insert_tasks)."""

    order = 10

    def __init__(self, tasks: Sequence[NewTask]) -> None:
        super().__init__()
        self.tasks = tasks

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CreateTasks], env: Env, now: int
    ) -> list[list[str]]:
        tasks = [t for op in ops for t in op.tasks]
        fresh = [t for t in tasks if t.request_id is None and t.initial_state is TaskState.PENDING]
        leased = env.dispatcher.hand_off(fresh, now) if fresh else {}
        ids = await store.insert_tasks(conn, tasks, leased)
        ready = {
            t.queue for t in tasks if t.initial_state is TaskState.PENDING and t.id not in leased
        }
        env.dispatcher.mark_ready(ready)
        delayed = [t.run_at for t in tasks if t.initial_state is TaskState.SCHEDULED]
        if delayed:
            env.due.due_at(min(delayed))
        return _split([len(op.tasks) for op in ops], ids)


class CancelTask(Op[store.CancelOutcome]):
    order = 20

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.reason = reason

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[CancelTask], env: Env, now: int
    ) -> list[store.CancelOutcome]:
        return [await store.cancel(conn, op.task_id, reason=op.reason, now=now) for op in ops]

    def after_commit(self, result: store.CancelOutcome, env: Env) -> None:
        if result.lease is not None:
            env.dispatcher.stop([result.lease], StopReason.CANCEL_REQUESTED)
        if result.found:
            env.events.state_changed([self.task_id])


class ExtendLeases(Op[dict[str, store.ExtendResult]]):
    order = 30

    def __init__(self, items: Sequence[store.Extension]) -> None:
        super().__init__()
        self.items = items

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ExtendLeases], env: Env, now: int
    ) -> list[dict[str, store.ExtendResult]]:
        results = await store.extend_leases(conn, [i for op in ops for i in op.items], now)
        return [{i.task_id: results[i.task_id] for i in op.items} for op in ops]


class EndLeases(Op[list[store.Ended | None]]):
    """Record how leases ended; a None result slot means the lease was no longer held."""

    order = 40

    def __init__(self, ends: Sequence[LeaseEnd]) -> None:
        super().__init__()
        self.ends = ends

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[EndLeases], env: Env, now: int
    ) -> list[list[store.Ended | None]]:
        ends = [e for op in ops for e in op.ends]
        results = await store.end_leases(conn, ends, now=now, policy=env.policy)
        _route_ended(results, env)
        return _split([len(op.ends) for op in ops], results)

    def after_commit(self, result: list[store.Ended | None], env: Env) -> None:
        ended = [e.task_id for e in result if e is not None]
        env.dispatcher.ended(ended)
        env.events.state_changed(ended)


def _route_ended(results: Sequence[store.Ended | None], env: Env) -> None:
    """Tasks coming back for another attempt wake the dispatcher or the promoter."""
    ready = {e.queue for e in results if e is not None and e.state is TaskState.PENDING}
    env.dispatcher.mark_ready(ready)
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


class AdoptLeases(Op[set[str]]):
    """Re-attach the leases a reconnecting worker still holds."""

    order = 50

    def __init__(self, refs: Sequence[LeaseRef], worker_id: str) -> None:
        super().__init__()
        self.refs = refs
        self.worker_id = worker_id

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[AdoptLeases], env: Env, now: int
    ) -> list[set[str]]:
        expires = now + env.lease_duration_us
        return [
            await store.adopt_leases(
                conn, op.refs, worker_id=op.worker_id, expires=expires, now=now
            )
            for op in ops
        ]


class PromoteDue(Op[list[str]]):
    """SCHEDULED and RETRYING tasks whose time has come become PENDING."""

    order = 60

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[PromoteDue], env: Env, now: int
    ) -> list[list[str]]:
        promoted = await store.promote_due(conn, now=now, limit=max(op.limit for op in ops))
        env.dispatcher.mark_ready({queue for _, queue in promoted})
        return [[task_id for task_id, _ in promoted]] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[str], env: Env) -> None:
        env.events.state_changed(result)


class ExpireLeases(Op[list[LeaseRef]]):
    """Take back leases whose deadline passed without a heartbeat or result."""

    order = 70

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ExpireLeases], env: Env, now: int
    ) -> list[list[LeaseRef]]:
        refs = await store.expired_leases(conn, now=now, limit=max(op.limit for op in ops))
        if not refs:
            return [[] for _ in ops]
        ends = [LeaseEnd(r.task_id, r.lease_id, Lost(LossReason.EXPIRED)) for r in refs]
        results = await store.end_leases(conn, ends, now=now, policy=env.policy)
        _route_ended(results, env)
        expired = [r for r, e in zip(refs, results, strict=True) if e is not None]
        return [expired] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[LeaseRef], env: Env) -> None:
        env.dispatcher.stop(result, StopReason.LEASE_LOST)
        env.events.state_changed([r.task_id for r in result])
