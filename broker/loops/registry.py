"""Keeps the worker registry current: this replica's sessions, written every few seconds.

Liveness itself stays in memory (a heartbeat never writes a registry row); the
registry is for people asking "which workers are there": ListWorkers reads rows
refreshed within the last few intervals, so a replica that died drops out of the
list on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.clock import Clock
from broker.loops.committer import Committer
from broker.loops.ops import Env, Op
from broker.store import workers
from broker.store.workers import SessionRow

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
STALE_US = int(3 * INTERVAL_S * 1_000_000)


class WriteSessions(Op[None]):
    """Upsert (or remove) this replica's session rows."""

    order = 95

    def __init__(
        self, rows: Sequence[SessionRow], gone: Sequence[str] = (), stale_before: int = 0
    ) -> None:
        super().__init__()
        self.rows = rows
        self.gone = gone
        self.stale_before = stale_before

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[WriteSessions], env: Env, now: int
    ) -> list[None]:
        for op in ops:
            await workers.remove(conn, op.gone)
            await workers.upsert(conn, op.rows)
            if op.stale_before:
                await workers.forget_stale(conn, seen_before=op.stale_before)
        return [None for _ in ops]


class DrainWorker(Op[None]):
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


class RegistryLoop:
    def __init__(
        self, *, committer: Committer, clock: Clock, snapshot: Callable[[], list[SessionRow]]
    ) -> None:
        self._committer = committer
        self._clock = clock
        self._snapshot = snapshot

    async def run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                now = self._clock.now_us()
                await self._committer.submit(
                    WriteSessions(self._snapshot(), stale_before=now - 4 * STALE_US)
                )
            except Exception:
                log.warning("could not refresh the worker registry", exc_info=True)
