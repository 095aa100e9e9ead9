"""The conformance suite's task types on the Python SDK (`tests.conformance.python_worker:worker`).

The same types, with the same behaviour, live in examples/node-worker/src/conformance.js.
Handlers append `<event> <task_id> <attempt> <pid> [extra]` to the file named by
TASKYARD_TEST_RECORD, so that tests count executions from outside the process.

* `conformance.echo` returns its payload.
* `conformance.sleep` `{"seconds": s | [s1, s2, ...]}` sleeps `s` (per attempt; the last
  entry repeats) and returns `{"attempt", "worker"}`.
* `conformance.fail` `{"non_retryable": bool}` fails with type `ConformanceError`.
* `conformance.retry_after` `{"delay": s, "succeed_on": n = 2, "type": "RateLimited"}`:
  attempts before `n` fail asking for the next attempt after `delay` seconds
  (`ctx.retry`); attempt `n` returns `{"attempt"}`.
* `conformance.wait_cancel` runs until told to stop (cancelled, timed out, lease lost).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from taskyard.v1 import worker_service_pb2 as pb
from worker_sdk import NonRetryableError, TaskContext, Worker

log = logging.getLogger("taskyard.conformance")


def _append(line: str) -> None:
    path = os.environ.get("TASKYARD_TEST_RECORD")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _record(event: str, ctx: TaskContext, *extra: object) -> None:
    _append(" ".join([event, ctx.task_id, str(ctx.attempt), str(os.getpid()), *map(str, extra)]))


class _CountingCall:
    """Wraps the Lease call to log how many assignments each message carries."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def read(self) -> Any:
        message = await self._call.read()
        if isinstance(message, pb.LeaseResponse) and message.WhichOneof("kind") == "assignments":
            size = len(message.assignments.assignments)
            log.info("received %d assignments", size)
            _append(f"batch - - {os.getpid()} {size}")
        return message


class ConformanceWorker(Worker):
    # The SDK has no hook for observing messages; wrapping the private reader is the
    # smallest way to see batch sizes without changing the SDK's behaviour.
    async def _read(self, call: Any) -> None:
        await super()._read(_CountingCall(call))


class ConformanceError(Exception):
    """The failure type both workers report (the SDK sends the class name)."""


class _Permanent:
    class ConformanceError(NonRetryableError):
        """Same type name, but non-retryable: the SDK marks NonRetryableError subclasses."""


worker = ConformanceWorker(concurrency=4, shutdown_grace=5.0)


@worker.task("conformance.echo")
async def echo(ctx: TaskContext) -> Any:
    return ctx.payload


@worker.task("conformance.sleep")
async def sleep(ctx: TaskContext) -> dict[str, Any]:
    seconds = (ctx.payload or {}).get("seconds", 0.1)
    plan = seconds if isinstance(seconds, list) else [seconds]
    _record("start", ctx)
    log.info("conformance: started task %s attempt %d", ctx.task_id, ctx.attempt)
    await asyncio.sleep(float(plan[min(ctx.attempt, len(plan)) - 1]))
    log.info("conformance: finished task %s attempt %d", ctx.task_id, ctx.attempt)
    _record("end", ctx)
    return {"attempt": ctx.attempt, "worker": worker.worker_id}


@worker.task("conformance.fail")
async def fail(ctx: TaskContext) -> None:
    _record("start", ctx)
    message = f"failure on attempt {ctx.attempt}"
    if (ctx.payload or {}).get("non_retryable"):
        raise _Permanent.ConformanceError(message)
    raise ConformanceError(message)


@worker.task("conformance.retry_after")
async def retry_after(ctx: TaskContext) -> dict[str, Any]:
    _record("start", ctx)
    options = ctx.payload or {}
    if ctx.attempt < options.get("succeed_on", 2):
        message = f"rate limited on attempt {ctx.attempt}"
        ctx.retry(options.get("delay", 0), message, type=options.get("type", "RateLimited"))
    return {"attempt": ctx.attempt}


@worker.task("conformance.wait_cancel")
async def wait_cancel(ctx: TaskContext) -> None:
    _record("start", ctx)
    try:
        await asyncio.Event().wait()
    finally:
        _record("stopped", ctx)
