"""Fire lag of a once-per-second schedule at real time (`python -m bench --scenario schedule`).

The broker fires a `* * * * * *` cron whose tasks a connected worker runs
(the `stamp` handler returns when it started). For each fire: the time from
the nominal fire time to the task's creation (the commit that fired it), and
to its handler starting. Reported as p50 and p99 in milliseconds.
"""

from __future__ import annotations

import asyncio
import statistics
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from worker_sdk import Client, TaskSpec

FIRES = 60


class _Setup(Protocol):
    broker: Any

    async def start_workers(self) -> None: ...


async def schedule_lag(
    setup: AbstractAsyncContextManager[_Setup], fires: int = FIRES
) -> dict[str, float]:
    async with setup as s:
        await s.start_workers()
        async with Client(s.broker.target, timeout=60) as client:
            await client.create_schedule(
                "lag", TaskSpec("stamp"), cron="* * * * * *", overlap="allow_all"
            )
            await asyncio.sleep(fires + 2.5)  # real time is what is measured
            await client.pause_schedule("lag")
            records = [f async for f in client.schedule_fires("lag") if f.task_id]
            records.sort(key=lambda f: f.fire_time.timestamp() if f.fire_time else 0.0)
            records = records[1 : fires + 1]  # the first fire may come a moment after creation
            created, started = [], []
            for f in records:
                assert f.fire_time is not None
                task = await client.get(f.task_id)
                ran = await client.wait(f.task_id, timeout=30)
                assert task.create_time is not None
                created.append((task.create_time - f.fire_time).total_seconds() * 1000)
                started.append((float(ran) - f.fire_time.timestamp()) * 1000)
    return {
        "fire_to_create_p50_ms": statistics.median(created),
        "fire_to_create_p99_ms": _p99(created),
        "fire_to_start_p50_ms": statistics.median(started),
        "fire_to_start_p99_ms": _p99(started),
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]
