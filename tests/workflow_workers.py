"""Handlers for workflow tests, run as real worker processes (`tests.workflow_workers:worker`).

Handlers append `<event> <task_id> <attempt> <pid> <node> [extra]` lines to the
file named by TASKYARD_TEST_RECORD, so that tests can count executions across
processes (and broker restarts) from the outside.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

from worker_sdk import CONTEXT, NonRetryableError, TaskContext, TaskSpec, Worker, task


@dataclasses.dataclass
class Point:
    x: int
    y: int


@task("wf.typed.point")
async def point(x: int, y: int) -> Point:
    """A typed task whose result a child reads back as a Point."""
    return Point(x, y)


@task("wf.typed.total")
async def total(ctx: TaskContext = CONTEXT) -> dict[str, Any]:
    """Read each parent's result typed: as the `point` task returns it, or as a type."""
    assert ctx.workflow is not None
    first = ctx.workflow.result("p1", point)
    second = ctx.workflow.result("p2", Point)
    return {"sum": first.x + first.y + second.x + second.y, "types": [type(first).__name__]}


worker = Worker(concurrency=8, shutdown_grace=5.0, tasks=[point, total])


def _record(event: str, ctx: TaskContext, *extra: object) -> None:
    path = os.environ.get("TASKYARD_TEST_RECORD")
    if not path:
        return
    node = ctx.workflow.node if ctx.workflow else "-"
    fields = [event, ctx.task_id, str(ctx.attempt), str(os.getpid()), node, *map(str, extra)]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(fields) + "\n").encode())
    finally:
        os.close(fd)


@worker.task("wf.collect")
async def collect(ctx: TaskContext) -> dict[str, Any]:
    """Return this node's name, payload and every parent's result (fetched if need be)."""
    _record("run", ctx, time.time())
    assert ctx.workflow is not None
    parents = await ctx.workflow.fetch_parents()
    if isinstance(ctx.payload, dict) and ctx.payload.get("sizes"):
        return {"sizes": {name: len(p.result or "") for name, p in parents.items()}}
    return {
        "node": ctx.workflow.node,
        "payload": ctx.payload,
        "parents": {name: p.result for name, p in parents.items()},
        "states": {name: p.state.value for name, p in parents.items()},
    }


@worker.task("wf.inline")
async def inline(ctx: TaskContext) -> dict[str, Any]:
    """What the assignment itself carried: which parents' results came inline."""
    _record("run", ctx, time.time())
    assert ctx.workflow is not None
    return {
        "truncated": ctx.workflow.truncated,
        "inline": sorted(n for n, p in ctx.workflow.parents.items() if not p.omitted),
        "omitted": sorted(n for n, p in ctx.workflow.parents.items() if p.omitted),
        "count": len(ctx.workflow.parents),
    }


@worker.task("wf.big")
async def big(ctx: TaskContext) -> str:
    """A result of `size` characters."""
    _record("run", ctx, time.time())
    return "x" * int(ctx.payload["size"])


@worker.task("wf.fail")
async def fail(ctx: TaskContext) -> None:
    _record("run", ctx, time.time())
    raise NonRetryableError(f"node {ctx.workflow.node if ctx.workflow else '-'} fails")


@worker.task("wf.slow")
async def slow(ctx: TaskContext) -> str:
    """Sleep `seconds`; record when it starts and when it is cancelled."""
    _record("start", ctx, time.time())
    try:
        await asyncio.sleep(float((ctx.payload or {}).get("seconds", 30)))
    except asyncio.CancelledError:
        _record("cancelled", ctx, time.time())
        raise
    return "slept"


@worker.task("wf.flaky")
async def flaky(ctx: TaskContext) -> str:
    """Fail (for good) until the file named in the payload exists."""
    _record("run", ctx, time.time())
    if not os.path.exists(ctx.payload["marker"]):  # noqa: ASYNC240 - a local file, instant
        raise NonRetryableError("the marker file is missing")
    return "fixed"


@worker.task("wf.spawn")
async def spawn(ctx: TaskContext) -> int:
    """Spawn `n` wf.collect children (payload: their index), twice: spawning is idempotent."""
    _record("run", ctx, time.time())
    assert ctx.workflow is not None
    n = int(ctx.payload["n"])
    specs = [TaskSpec("wf.collect", i) for i in range(n)]
    for start in range(0, n, 1000):
        await ctx.workflow.spawn({str(i): specs[i] for i in range(start, min(n, start + 1000))})
    if n:
        again = await ctx.workflow.spawn({"0": specs[0]})
        assert again[0].name == f"{ctx.workflow.node}/0"
    return n


@worker.task("wf.noop")
async def noop(ctx: TaskContext) -> None:
    _record("run", ctx, time.time())
    await asyncio.sleep(float((ctx.payload or {}).get("seconds", 0)))
