"""CPU-bound tasks in threads and in the process pool (`python -m bench --scenario executors`).

One worker (concurrency 4, a process pool of one child per core) gets 4 tasks of
`--cpu-seconds` of CPU work each, first in its process pool, then in its thread pool. Each
figure is the time from the first submission to the last result. On 2 cores, 4 one-second
tasks take about 2 s in processes and about 4 s in threads (the GIL runs one thread at a
time).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from bench.cpu import cpu_process, cpu_thread
from tests.helpers import start_worker
from worker_sdk import Client

TASKS = 4


class _Setup(Protocol):
    broker: Any
    workdir: Path


async def _span(client: Client, seconds: float, *, processes: bool) -> float:
    definition = cpu_process if processes else cpu_thread
    started = time.perf_counter()
    handles = [await definition.submit(client, seconds=seconds) for _ in range(TASKS)]
    await asyncio.gather(*(h.result(timeout=600) for h in handles))
    return time.perf_counter() - started


async def executor_spans(
    setup: AbstractAsyncContextManager[_Setup], seconds: float
) -> dict[str, float]:
    async with setup as s:
        worker = await start_worker(
            s.broker, s.workdir, name="cpu", app="bench.cpu:worker", concurrency=TASKS
        )
        try:
            async with Client(s.broker.target, timeout=60) as client:
                await _span(client, 0.01, processes=True)  # warm: every child has run once
                process = await _span(client, seconds, processes=True)
                thread = await _span(client, seconds, processes=False)
        finally:
            await worker.stop()
    return {"process_pool_s": process, "threads_s": thread}
