"""The workers the end-to-end tests run as real processes (`tests.workers:worker`).

Handlers append `<event> <task_id> <attempt> <pid> [extra]` lines to the file
named by TASKYARD_TEST_RECORD, so that tests can count executions across
processes from the outside.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from worker_sdk import NonRetryableError, TaskContext, Worker

worker = Worker(concurrency=4, shutdown_grace=5.0)
_running = 0
_peak = 0


def _record(event: str, ctx: TaskContext, *extra: object) -> None:
    path = os.environ.get("TASKYARD_TEST_RECORD")
    if not path:
        return
    fields = [event, ctx.task_id, str(ctx.attempt), str(os.getpid()), *map(str, extra)]
    line = " ".join(fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@worker.task("echo")
async def echo(ctx: TaskContext) -> Any:
    return ctx.payload


@worker.task("gc.pacing")
async def gc_pacing(ctx: TaskContext) -> Any:
    """How many objects this worker process froze out of the collector's way (_collector.py)."""
    return {"frozen": gc.get_freeze_count()}


@worker.task("record")
async def record(ctx: TaskContext) -> Any:
    _record("run", ctx, time.time())
    return ctx.payload


@worker.task("record.sync")
def record_sync(ctx: TaskContext) -> Any:
    _record("run", ctx, time.time())
    return ctx.payload


@worker.task("sleep")
async def sleep(ctx: TaskContext) -> dict[str, Any]:
    """Sleep `seconds`, tracking how many run at once in this process."""
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    _record("start", ctx, _running)
    try:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 0.1)))
    finally:
        _running -= 1
    return {"peak": _peak}


@worker.task("hang.first")
async def hang_first(ctx: TaskContext) -> dict[str, Any]:
    """Hang on the first attempt (until killed or cancelled); succeed on later ones."""
    _record("start", ctx)
    if ctx.attempt == 1:
        await asyncio.Event().wait()
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@worker.task("progress")
async def progress(ctx: TaskContext) -> str:
    """Report `steps` progress steps, each after the watcher could see the previous."""
    steps = int((ctx.payload or {}).get("steps", 3))
    pause = float((ctx.payload or {}).get("pause", 0.3))
    for step in range(1, steps + 1):
        ctx.progress(100 * step / steps, f"step {step}", step=step, total_steps=steps)
        await asyncio.sleep(pause)
    return "done"


@worker.task("fail")
async def fail(ctx: TaskContext) -> None:
    if (ctx.payload or {}).get("permanent"):
        raise NonRetryableError("permanent failure")
    raise ValueError(f"failure on attempt {ctx.attempt}")


@worker.task("fail.first")
async def fail_first(ctx: TaskContext) -> dict[str, int]:
    """Fail the first attempt; succeed on later ones (a retried dead letter runs again)."""
    _record("run", ctx)
    if ctx.attempt == 1:
        raise ValueError("failure on the first attempt")
    return {"attempt": ctx.attempt}


@worker.task("bad.result")
async def bad_result(ctx: TaskContext) -> object:
    return {"not": object()}


@worker.task("slow")
async def slow(ctx: TaskContext) -> str:
    """Sleep `seconds`; record when it starts and when it is cancelled."""
    _record("start", ctx, time.time())
    try:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 30)))
    except asyncio.CancelledError:
        _record("cancelled", ctx, time.time())
        raise
    return "done"


@worker.task("slow.sync")
def slow_sync(ctx: TaskContext) -> str:
    """A thread handler that polls for cancellation, as thread handlers must."""
    _record("start", ctx, time.time())
    if ctx.wait_cancelled(float((ctx.payload or {}).get("seconds", 30))):
        _record("cancelled", ctx, time.time())
        return "stopped early"
    return "done"


@worker.task("soft")
async def soft(ctx: TaskContext) -> dict[str, Any]:
    """Work until the soft timeout warns, then wrap up before the hard one."""
    warned = asyncio.Event()
    ctx.on_soft_timeout(warned.set)
    await asyncio.wait_for(warned.wait(), timeout=30)
    return {"wrapped_up": ctx.soft_timeout_exceeded, "soft": str(ctx.soft_deadline)}


@worker.task("raise")
async def raise_named(ctx: TaskContext) -> None:
    """Raise the exception class named in the payload."""
    name = (ctx.payload or {}).get("error", "RuntimeError")
    raise {"ValueError": ValueError, "KeyError": KeyError}.get(name, RuntimeError)(name)


@worker.task("chaos")
async def chaos(ctx: TaskContext) -> Any:
    """A short task, long enough that crashes catch some of them in flight."""
    _record("run", ctx, time.time())
    await asyncio.sleep(0.02)
    return ctx.payload


_in_flight = 0


@worker.task("counted")
async def counted(ctx: TaskContext) -> Any:
    """Record each run with how many handlers of this process were running at its start."""
    global _in_flight
    _in_flight += 1
    try:
        _record("run", ctx, time.time(), _in_flight)
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 0.005)))
    finally:
        _in_flight -= 1
    return ctx.payload


@worker.task("span")
async def span(ctx: TaskContext) -> None:
    """Record when the handler ran: `span <task> <attempt> <pid> <start> <end> <key>`."""
    payload = ctx.payload or {}
    started = time.time()
    await asyncio.sleep(float(payload.get("seconds", 0.02)))
    _record("span", ctx, started, time.time(), payload.get("key", "-"))


@worker.task("context.id")
async def context_id(ctx: TaskContext) -> dict[str, str]:
    """`ctx.id` is `ctx.task_id`, spelled as on the client's Task."""
    return {"id": ctx.id, "task_id": ctx.task_id}


@worker.task("context.typo")
async def context_typo(ctx: TaskContext) -> Any:
    """Ask the context for a name it does not have (as a typo in a handler would)."""
    _record("run", ctx)
    return getattr(ctx, (ctx.payload or {}).get("name", "taskid"))
