"""The soak scenario: the broker's resident memory as a million tasks go through it.

Workers run no-op tasks while a client keeps a bounded backlog submitted; after
every `step` succeeded tasks the broker's RSS is read from /proc. Finished tasks
are deleted after `retention` (the broker's retention loop), so the database
stays the size of a steady state and what grows, if anything, is the broker.
The verdict: from `settle` tasks on, RSS stays within 10% of its value there.

PostgreSQL must vacuum the hot tables for the broker's queries to stay fast over a
million updates: on a server with autovacuum off (a test server, say) the soak
runs VACUUM itself every VACUUM_EVERY_S and says so in its report.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from broker.store.database import normalize_url
from worker_sdk import Client, TaskSpec

BATCH = 1000
IN_FLIGHT = 4  # submissions at a time
TOLERANCE = 0.10
VACUUM_EVERY_S = 30.0
HOT_TABLES = ("task", "task_payload", "task_result", "task_attempt", "queue_count", "task_stat")


class SoakSetup(Protocol):
    db_url: str

    @property
    def broker_pid(self) -> int: ...

    def clients(self, timeout: float = 120) -> list[Client]: ...

    async def start_workers(self) -> None: ...


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(
    setup: SoakSetup, *, total: int, step: int, settle: int, backlog: int
) -> dict[str, Any]:
    """Run `total` tasks with at most `backlog` unfinished; RSS after every `step`."""
    engine = create_async_engine(normalize_url(setup.db_url))
    vacuum = await _vacuum_stand_in(setup.db_url)
    clients = setup.clients()
    await setup.start_workers()
    series: list[tuple[int, float]] = [(0, rss_mb(setup.broker_pid))]
    started = time.perf_counter()
    submitted = 0
    try:
        done = 0
        pending: set[asyncio.Task[Any]] = set()
        while done < total:
            while submitted < total and submitted - done < backlog and len(pending) < IN_FLIGHT:
                n = min(BATCH, total - submitted)
                batch = [TaskSpec("noop") for _ in range(n)]
                client = clients[(submitted // BATCH) % len(clients)]
                pending.add(asyncio.create_task(client.submit_many(batch)))
                submitted += n
            if pending:
                finished, pending = await asyncio.wait(pending, timeout=0.2)
                for f in finished:
                    f.result()
            else:
                await asyncio.sleep(0.2)  # a benchmark's poll: the backlog drains meanwhile
            done = await _succeeded(engine)
            while len(series) <= total // step and done >= len(series) * step:
                series.append((len(series) * step, rss_mb(setup.broker_pid)))
        await asyncio.gather(*pending)
    finally:
        if vacuum is not None:
            vacuum.cancel()
        for client in clients:
            await client.close()
        await engine.dispose()
    elapsed = time.perf_counter() - started
    report = _report(series, settle=settle, tasks_per_s=total / elapsed)
    if vacuum is not None:
        report["note"] = (
            f"autovacuum is off on this server: the soak vacuumed every {VACUUM_EVERY_S:g} s"
        )
    return report


async def _vacuum_stand_in(db_url: str) -> asyncio.Task[None] | None:
    """On PostgreSQL with autovacuum off, vacuum the hot tables now and then; else None."""
    if not db_url.startswith("postgres"):
        return None
    engine = create_async_engine(normalize_url(db_url), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        setting = await conn.scalar(sa.text("SHOW autovacuum"))
    if setting == "on":
        await engine.dispose()
        return None

    async def run() -> None:
        try:
            while True:
                await asyncio.sleep(VACUUM_EVERY_S)
                async with engine.connect() as conn:
                    for table in HOT_TABLES:
                        await conn.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        finally:
            await engine.dispose()

    return asyncio.create_task(run())


async def _succeeded(engine: Any) -> int:
    """Tasks succeeded so far, from the per-minute rollups (retention deletes the tasks)."""
    async with engine.connect() as conn:
        value = await conn.scalar(sa.text("SELECT coalesce(sum(succeeded), 0) FROM task_stat"))
    return int(value or 0)


def _report(series: list[tuple[int, float]], *, settle: int, tasks_per_s: float) -> dict[str, Any]:
    after = [mb for n, mb in series if n >= settle]
    base = after[0] if after else None
    spread = (max(after) - min(after)) / base if base else None
    return {
        "rss_mb": [[n, round(mb, 1)] for n, mb in series],
        "settle_tasks": settle,
        "rss_spread_after_settle": None if spread is None else round(spread, 3),
        "flat": None if spread is None else spread <= TOLERANCE,
        "tasks_per_s": round(tasks_per_s, 1),
    }
