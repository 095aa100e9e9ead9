"""Time-driven and operator ops: promotion, lease expiry, timeouts, expiry, retry, purge.

All run through the committer like any other write, in bounded batches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import LeaseEnd, LeaseRef, LossReason, Lost, TimedOut
from broker.core.queues import QueueSettings
from broker.core.record import record
from broker.core.task_state import TERMINAL, TaskState
from broker.engine import flows
from broker.engine.dispatcher import StopReason
from broker.engine.ops import Env, Op, route_ended
from broker.store import leases, maintenance, queues, tasks


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
        promoted = await maintenance.promote_due(conn, now=now, limit=max(o.limit for o in ops))
        for m in promoted:
            env.ledger.moved(m.queue, m.source, TaskState.PENDING)
            env.journal.task(m.task_id, m.queue, m.type, TaskState.PENDING, m.source, m.attempt)
        env.ready(m.queue for m in promoted)
        return [[m.task_id for m in promoted]] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[str], env: Env) -> None:
        env.events.state_changed(result)


@record
class Expired:
    ref: LeaseRef
    lapsed: bool  # the task waits again and the holder may still report it


class ExpireLeases(Op[list[Expired]]):
    """Take back leases whose holder sent no heartbeat in time."""

    order = 70

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ExpireLeases], env: Env, now: int
    ) -> list[list[Expired]]:
        refs = await leases.expired_leases(conn, now=now, limit=max(o.limit for o in ops))
        ends = [LeaseEnd(r.task_id, r.lease_id, Lost(LossReason.EXPIRED)) for r in refs]
        if not ends:
            return [[] for _ in ops]
        results = await leases.end_leases(conn, ends, now=now, policy=env.policy)
        route_ended(results, env, now)
        # Waiting again, the task's lease lapsed (its holder may still report it);
        # a task the loss made DEAD is gone for good.
        lapsed = [r is not None and r.state is TaskState.PENDING for r in results]
        first = [
            Expired(LeaseRef(e.task_id, e.lease_id), lapse)
            for e, r, lapse in zip(ends, results, lapsed, strict=True)
            if r is not None
        ]
        # Now, not after the commit: this very transaction's claims must already pass
        # the silent sessions by (their own tasks just became claimable).
        env.dispatcher.lapse([e.ref for e in first if e.lapsed])
        return [first] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[Expired], env: Env) -> None:
        env.dispatcher.stop([e.ref for e in result if not e.lapsed], StopReason.LEASE_LOST)
        env.events.state_changed([e.ref.task_id for e in result])
        if result:
            env.metrics.leases_expired(len(result))


class TimeOutAttempts(Op[list[LeaseRef]]):
    """End attempts that ran past their execution timeout, as retryable failures."""

    order = 71

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[TimeOutAttempts], env: Env, now: int
    ) -> list[list[LeaseRef]]:
        overdue = await leases.overdue_attempts(conn, now=now, limit=max(o.limit for o in ops))
        ends = [LeaseEnd(r.task_id, r.lease_id, TimedOut(timeout)) for r, timeout in overdue]
        return [await _end(conn, ends, env, now)] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[LeaseRef], env: Env) -> None:
        env.dispatcher.stop(result, StopReason.TIMED_OUT)
        env.events.state_changed([r.task_id for r in result])


async def _end(conn: AsyncConnection, ends: list[LeaseEnd], env: Env, now: int) -> list[LeaseRef]:
    if not ends:
        return []
    results = await leases.end_leases(conn, ends, now=now, policy=env.policy)
    route_ended(results, env, now)
    await flows.settle_ended(conn, env, results, now)
    return [
        LeaseRef(e.task_id, e.lease_id) for e, r in zip(ends, results, strict=True) if r is not None
    ]


class ExpireTasks(Op[list[str]]):
    """Waiting tasks that passed their expiry become EXPIRED and never run."""

    order = 72

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ExpireTasks], env: Env, now: int
    ) -> list[list[str]]:
        expired = await maintenance.expire_tasks(conn, now=now, limit=max(o.limit for o in ops))
        for m in expired:
            env.ledger.moved(m.queue, m.source, TaskState.EXPIRED)
            env.journal.task(m.task_id, m.queue, m.type, TaskState.EXPIRED, m.source, m.attempt)
            env.ledger.finished_waiting(m.queue, m.type, now, TaskState.EXPIRED)
        nodes = [
            flows.NodeMove(m.task_id, m.workflow_id, m.queue, m.type, m.source, TaskState.EXPIRED)
            for m in expired
            if m.workflow_id is not None
        ]
        if nodes:
            await flows.settle(conn, env, nodes, now)
        return [[m.task_id for m in expired]] + [[] for _ in ops[1:]]

    def after_commit(self, result: list[str], env: Env) -> None:
        env.events.state_changed(result)


class RetryFinished(Op[list[str]]):
    """Re-queue finished tasks: given ids, or up to `limit` of a queue in `states`."""

    order = 80

    def __init__(
        self,
        *,
        task_ids: Sequence[str] = (),
        queue: str | None = None,
        states: Collection[TaskState] = (),
        limit: int = 500,
    ) -> None:
        super().__init__()
        self.task_ids = task_ids
        self.queue = queue
        self.states = states
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[RetryFinished], env: Env, now: int
    ) -> list[list[str]]:
        out = []
        for op in ops:
            if op.queue is not None:
                records = await maintenance.finished_records(
                    conn, queue=op.queue, states=op.states, limit=op.limit
                )
            else:
                found = [await tasks.get_task(conn, i, full=False) for i in op.task_ids]
                records = [r for r in found if r is not None]
            retried = await maintenance.retry_tasks(conn, records, now=now)
            for r in retried:
                env.ledger.moved(r.queue, r.source, TaskState.PENDING)
                env.journal.task(r.task_id, r.queue, r.type, TaskState.PENDING, r.source, r.attempt)
            env.ready(r.queue for r in retried)
            out.append([r.task_id for r in retried])
        return out

    def after_commit(self, result: list[str], env: Env) -> None:
        env.events.state_changed(result)


class Purge(Op[int]):
    """Delete up to `limit` finished tasks matching the filters."""

    order = 90

    def __init__(
        self,
        *,
        finished_before: int,
        states: Collection[TaskState] = TERMINAL,
        queue: str | None = None,
        exclude_queues: Collection[str] = (),
        limit: int = 1000,
    ) -> None:
        super().__init__()
        self.finished_before = finished_before
        self.states = states
        self.queue = queue
        self.exclude_queues = exclude_queues
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[Purge], env: Env, now: int
    ) -> list[int]:
        out = []
        for op in ops:
            deleted = await maintenance.purge(
                conn,
                finished_before=op.finished_before,
                states=op.states,
                queue=op.queue,
                exclude_queues=op.exclude_queues,
                limit=op.limit,
            )
            for (queue, state), n in deleted.items():
                env.ledger.moved(queue, state, None, n)
            out.append(sum(deleted.values()))
        return out


class ForgetRequestIds(Op[int]):
    """Release idempotency keys older than their retention."""

    order = 91

    def __init__(self, *, created_before: int, limit: int = 1000) -> None:
        super().__init__()
        self.created_before = created_before
        self.limit = limit

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ForgetRequestIds], env: Env, now: int
    ) -> list[int]:
        return [
            await maintenance.forget_request_ids(
                conn, created_before=op.created_before, limit=op.limit
            )
            for op in ops
        ]


class ClaimTick(Op[bool]):
    """Win a background duty's tick, so that replicas do not all run it (see claim_tick)."""

    order = 5

    def __init__(self, name: str, interval_us: int) -> None:
        super().__init__()
        self.name = name
        self.interval_us = interval_us

    def fresh(self) -> ClaimTick:
        """A new op for the next tick (an op's future resolves once)."""
        return ClaimTick(self.name, self.interval_us)

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ClaimTick], env: Env, now: int
    ) -> list[bool]:
        return [
            await maintenance.claim_tick(conn, name=op.name, now=now, interval_us=op.interval_us)
            for op in ops
        ]


class SaveQueue(Op["QueueSettings | None"]):
    """Create, change or delete a queue's settings; a resumed queue wakes its workers.

    The result is the saved settings, or None when `create` found the name taken.
    """

    order = 3

    def __init__(
        self, settings: QueueSettings, *, create: bool = False, delete: bool = False
    ) -> None:
        super().__init__()
        self.settings = settings
        self.create = create
        self.delete = delete

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[SaveQueue], env: Env, now: int
    ) -> list[QueueSettings | None]:
        out: list[QueueSettings | None] = []
        for op in ops:
            if op.delete:
                await queues.delete_queue(conn, op.settings.name)
                out.append(op.settings)
            elif op.create:
                out.append(op.settings if await queues.create_queue(conn, op.settings) else None)
            else:
                await queues.save_queue(conn, op.settings)
                out.append(op.settings)
            if not op.settings.paused:
                env.ready([op.settings.name])
        return out
