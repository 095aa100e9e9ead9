"""CPU seconds per part of a system, read from Linux's /proc (bench/proc.py).

* A process tree (a broker, a worker and the pool children it forks): `tree_cpu`.
* The Redis server: its process, found by `INFO server`'s `process_id`. Everything Redis
  does in the window counts, so it includes every system's handler stamps and, on a shared
  machine, any other client's commands in that window.
* PostgreSQL: a server process per connection. `PgBackends` samples `pg_stat_activity`
  for the backends connected to the run's own scratch database every 0.2 s and sums the
  CPU each used inside the window (a backend that connects during the window counts from
  zero). The cluster's shared processes (WAL writer, checkpointer, background writer,
  autovacuum) serve every database and are not counted; a backend that disconnects
  between two samples loses at most its last 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from bench.proc import cpu_seconds


class PgBackends:
    """CPU of the PostgreSQL backends connected to one database, over a window."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        self._admin_dsn = admin_dsn
        self._database = database
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    async def _sample(self, *, baseline: bool) -> None:
        assert self._conn is not None
        rows = await self._conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._database
        )
        for row in rows:
            pid = int(row["pid"])
            used = cpu_seconds(pid)
            if baseline:
                self._base[pid] = used
            self._base.setdefault(pid, 0.0)
            self._last[pid] = max(self._last.get(pid, 0.0), used)

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._admin_dsn)
        await self._sample(baseline=True)
        self._task = asyncio.create_task(self._poll(), name="pg-backend-sampler")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._sample(baseline=False)

    async def stop(self) -> float:
        """Stop sampling; the CPU seconds the database's backends used since `start`."""
        assert self._task is not None and self._conn is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._sample(baseline=False)
        await self._conn.close()
        return sum(self._last[pid] - self._base[pid] for pid in self._last)
