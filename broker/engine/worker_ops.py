"""The committer's ops for the worker registry: write this replica's sessions, drain a worker.

Liveness stays in memory; these rows are for people asking which workers
there are (ListWorkers), refreshed by `loops/registry.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.engine.event_record import WorkerChange
from broker.engine.ops import Env, Op
from broker.store import workers
from broker.store.workers import SessionRow


class WriteSessions(Op[None]):
    """Upsert (or remove) this replica's session rows; `change` goes into the event journal."""

    order = 95

    def __init__(
        self,
        rows: Sequence[SessionRow],
        gone: Sequence[str] = (),
        stale_before: int = 0,
        change: tuple[WorkerChange, SessionRow] | None = None,
    ) -> None:
        super().__init__()
        self.rows = rows
        self.gone = gone
        self.stale_before = stale_before
        self.change = change

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[WriteSessions], env: Env, now: int
    ) -> list[None]:
        for op in ops:
            await workers.remove(conn, op.gone)
            await workers.upsert(conn, op.rows)
            if op.stale_before:
                await workers.forget_stale(conn, seen_before=op.stale_before)
            if op.change is not None:
                env.journal.worker(*op.change)
        return [None for _ in ops]


class DrainWorker(Op[None]):
    """Mark a worker draining in the registry and tell the other replicas."""

    order = 96

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[DrainWorker], env: Env, now: int
    ) -> list[None]:
        for op in ops:
            await workers.mark_draining(conn, op.worker_id)
            env.notices.drain(op.worker_id)
        return [None for _ in ops]
