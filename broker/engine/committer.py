"""Group commit: the one writer through which every hot write goes.

Callers submit ops and await their futures. The committer takes whatever ops
are waiting — one, or thousands — applies them in one transaction (ops of one
kind in one statement), lets the dispatcher claim tasks for hungry workers in
the same transaction, commits, and only then resolves the futures and hands
out the leases. A lone op never waits for company: the loop starts a
transaction as soon as anything is queued, and batches form by themselves
while a commit is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.task_state import TaskState
from broker.engine.dispatcher import Plan
from broker.engine.ledger import Ledger
from broker.engine.ops import EndLeases, Env, Op, released
from broker.errors import InvalidArgument
from broker.store.database import Database
from broker.store.failures import conflicted, storage_error

log = logging.getLogger(__name__)

R = TypeVar("R")

MAX_OPS_PER_COMMIT = 512
STATS_EVERY_US = 1_000_000  # rollups ride along with a commit about this often
FAILURE_BACKOFF_S = 0.5
MAX_CONFLICT_RETRIES = 3


class Committer:
    def __init__(self, *, db: Database, env: Env, doorbell: asyncio.Event) -> None:
        """`doorbell` wakes the commit loop; the dispatcher rings it when a claim is due."""
        self._db = db
        self._env = env
        self._queue: deque[Op[Any]] = deque()
        self._wake = doorbell
        self._stopping = False
        self._conn: AsyncConnection | None = None
        self._stats_at = 0
        self._conflicts = 0  # nested retries of one op that lost a lock conflict
        self.commits = 0

    @property
    def ledger(self) -> Ledger:
        return self._env.ledger

    def submit(self, op: Op[R]) -> asyncio.Future[R]:
        self._queue.append(op)
        self._wake.set()
        return op.future

    async def run(self) -> None:
        """Commit until stopped; on stop, finish what is queued, then return."""
        while True:
            if not self._queue and not self._env.dispatcher.wants_claim():
                if self._stopping:
                    if self._env.ledger.holding:
                        await self._commit([], claims=False)  # write the last rollups
                    await self._drop_connection()
                    return
                self._wake.clear()
                if not self._env.ledger.holding:
                    await self._wake.wait()
                    continue
                # Idle with rollups in hand: write them within a second anyway.
                try:
                    await asyncio.wait_for(self._wake.wait(), STATS_EVERY_US / 1_000_000)
                except TimeoutError:
                    await self._commit([], claims=False)
                continue
            ops = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_OPS_PER_COMMIT))]
            if not await self._commit(ops) and not ops:
                await asyncio.sleep(FAILURE_BACKOFF_S)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _commit(self, ops: list[Op[Any]], *, claims: bool = True) -> bool:
        env = self._env
        now = env.clock.now_us()
        plans: list[Plan] = []
        try:
            # The connection begins a transaction on its first statement.
            conn = await self._connection()
            results = await _apply(conn, ops, env, now)
            plans = env.dispatcher.plan() if claims else []
            if plans:
                # Flow control reads the counters as of the last commit, plus
                # what this transaction changed so far.
                await env.dispatcher.claim(
                    conn, plans, now, lambda q: env.ledger.pending(q, TaskState.RUNNING)
                )
                _account_claims(env, plans, now)
            with_stats = now - self._stats_at >= STATS_EVERY_US or self._stopping
            await env.ledger.flush(conn, with_stats=with_stats)
            if env.notices.enabled:
                env.notices.events(env.journal.outgoing(now))
            await env.notices.flush(conn)
            await conn.commit()
        except Exception as exc:
            env.dispatcher.abandon(plans)
            env.notices.discard()
            env.ledger.discard()
            env.journal.discard()
            env.deferred.clear()
            await self._drop_connection()
            if plans and ops:
                # Claims must never sink the writes they rode along with.
                log.error("claim failed (%s); committing %d ops without claims", exc, len(ops))
                return await self._commit(ops, claims=False)
            return await self._recover(ops, exc)
        self.commits += 1
        env.journal.commit(now)
        if with_stats:
            self._stats_at = now
        assert env.storage is not None
        env.storage.committed(type(op).__name__ for op in ops)
        env.metrics.record(env.ledger.commit())
        for op, result in zip(ops, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)
            op.after_commit(result, env)
        deferred, env.deferred = env.deferred, []
        for effect in deferred:
            effect()
        # After the ops' effects: a lease that ended in this commit is stopped
        # before its task is handed to its next holder.
        self._handoff(plans)
        return True

    async def _connection(self) -> AsyncConnection:
        # The committer keeps its one connection: no pool checkout, and on
        # PostgreSQL no pre-ping round trip, per commit. A failure drops it.
        if self._conn is None:
            self._conn = await self._db.writer.connect()
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.warning("closing a failed writer connection also failed", exc_info=True)

    def _handoff(self, plans: list[Plan]) -> None:
        orphans = self._env.dispatcher.deliver(plans)
        claimed = [c.id for p in plans for c in p.claimed]
        # Workflow watchers hear of their nodes starting (ids of both kinds are ULIDs).
        claimed += {c.workflow_id for p in plans for c in p.claimed if c.workflow_id}
        if claimed:
            self._env.events.state_changed(claimed)
        if orphans:
            self.submit(EndLeases([released(ref) for ref in orphans]))

    async def _recover(self, ops: list[Op[Any]], exc: Exception) -> bool:
        if len(ops) == 1 and conflicted(exc) and self._conflicts < MAX_CONFLICT_RETRIES:
            # Lock orders are kept consistent, but a deadlock PostgreSQL broke is no
            # caller's fault: run the op again (its own transaction) before giving up.
            self._conflicts += 1
            log.warning(
                "%s lost a lock conflict (%s); running it again", type(ops[0]).__name__, exc
            )
            try:
                return await self._commit(ops, claims=False)
            finally:
                self._conflicts -= 1
        if len(ops) > 1:
            # One bad op must not sink its neighbours: retry each on its own.
            log.warning("group commit of %d ops failed (%s); retrying one by one", len(ops), exc)
            for op in ops:
                await self._commit([op], claims=False)
            return True
        mapped = storage_error(exc)
        if mapped is not None and not isinstance(mapped, InvalidArgument):
            assert self._env.storage is not None
            self._env.storage.refused(mapped.reason, [type(op).__name__ for op in ops])
            self._env.metrics.storage_refused(mapped.reason)
        if ops:
            # A storage condition reaches the caller as what it is (STORAGE_FULL, …).
            if not ops[0].future.done():
                ops[0].future.set_exception(mapped or exc)
            return True
        log.error("claim transaction failed: %s", exc)
        return False


async def _apply(conn: AsyncConnection, ops: list[Op[Any]], env: Env, now: int) -> list[object]:
    # Ops of many kinds share a commit, so their result types are erased here
    # (Op[Any]); each kind's apply_all is checked against its own Op[R].
    groups: dict[type[Op[Any]], list[int]] = {}
    for index, op in enumerate(ops):
        groups.setdefault(type(op), []).append(index)
    results: list[object] = [None] * len(ops)
    for cls in sorted(groups, key=lambda c: c.order):
        indexes = groups[cls]
        outcome = await cls.apply_all(conn, [ops[i] for i in indexes], env, now)
        for i, result in zip(indexes, outcome, strict=True):
            results[i] = result
    return results


def _account_claims(env: Env, plans: list[Plan], now: int) -> None:
    for plan in plans:
        if plan.generation == 0:
            continue  # handed off at insert, accounted there
        for c in plan.claimed:
            env.ledger.moved(c.queue, TaskState.PENDING, TaskState.RUNNING)
            env.ledger.started(c.queue, c.type, now, now - c.run_at)
            env.journal.task(c.id, c.queue, c.type, TaskState.RUNNING, TaskState.PENDING, c.attempt)
