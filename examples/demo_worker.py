"""A demo worker: `taskyard worker examples.demo_worker:worker`.

Handles three task types: `echo` returns its payload, `sleep` sleeps with
progress reports, and `fail` raises so that retries can be seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from worker_sdk import NonRetryableError, TaskContext, Worker

worker = Worker(concurrency=8)


@worker.task("echo")
async def echo(ctx: TaskContext) -> Any:
    return ctx.payload


@worker.task("sleep")
async def sleep(ctx: TaskContext) -> dict[str, Any]:
    seconds = float((ctx.payload or {}).get("seconds", 1))
    steps = 10
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        ctx.progress(
            100 * step / steps, f"slept {seconds * step / steps:.1f}s", step=step, total_steps=steps
        )
    return {"slept": seconds}


@worker.task("fail")
def fail(ctx: TaskContext) -> None:
    if (ctx.payload or {}).get("permanent"):
        raise NonRetryableError("this task is designed to fail for good")
    raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")


if __name__ == "__main__":
    worker.run_forever()
