"""CPU seconds per part of a system, read from Linux's /proc.

* A process tree (a broker, a worker and the pool children it forks): user + system time
  of the process and of every live descendant, plus the time of children it has already
  reaped (`cutime`/`cstime`).
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
import os
from pathlib import Path

import asyncpg

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def own_cpu(pid: int) -> float:
    """User + system seconds of one process (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    used = sum(int(f) for f in fields[11:15]) / _TICK  # utime stime cutime cstime
    return used + sum(tree_cpu(child) for child in _children(pid))


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
            used = own_cpu(pid)
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
