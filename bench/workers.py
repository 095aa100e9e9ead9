"""Workers for the benchmarks: handlers that do nothing, so the broker is what is measured."""

from __future__ import annotations

import time

from worker_sdk import TaskContext, Worker

worker = Worker(concurrency=256)


@worker.task("noop")
async def noop(ctx: TaskContext) -> None:
    return None


@worker.task("stamp")
async def stamp(ctx: TaskContext) -> float:
    """Return when the handler started, for submit→start latency."""
    return time.time()


@worker.task("hop")
async def hop(ctx: TaskContext) -> dict[str, float]:
    """A chain link: when the handler started, and when it returns."""
    start = time.time()
    return {"start": start, "end": time.time()}
