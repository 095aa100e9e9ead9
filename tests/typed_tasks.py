"""Typed task definitions and the worker that runs them (`tests.typed_tasks:worker`).

The same module is what the tests' clients import to submit, as an application would.
Hooks and middleware append `<event> <task_id> <detail>` lines to TASKYARD_TEST_RECORD;
the process pool's limits come from TASKYARD_TEST_* variables, so that one module serves
every test.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import decimal
import enum
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from typing_extensions import TypedDict

from worker_sdk import (
    CONTEXT,
    NonRetryableError,
    ProcessPool,
    Resources,
    RetryPolicy,
    TaskContext,
    Worker,
    task,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Size(TypedDict):
    width: int
    height: int


class Price(BaseModel):
    amount: decimal.Decimal
    currency: str


class Everything(BaseModel):
    point: Point
    size: Size
    price: Price
    when: datetime
    id: uuid.UUID
    color: Color
    big: int


def _record(*fields: object) -> None:
    path = os.environ.get("TASKYARD_TEST_RECORD")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, fields)) + "\n").encode())
    finally:
        os.close(fd)


@task("typed.add")
async def add(a: int, b: int = 1) -> int:
    return a + b


@task("typed.roundtrip")
async def roundtrip(
    point: Point,
    size: Size,
    price: Price,
    when: datetime,
    id: uuid.UUID,
    color: Color,
    big: int,
    raw: bytes,
) -> tuple[Everything, bytes]:
    """Return what it got, so that a test sees every type make the trip both ways."""
    everything = Everything(
        point=point, size=size, price=price, when=when, id=id, color=color, big=big
    )
    return everything, raw


@task("typed.context", max_attempts=1)
def with_context(lines: int = 3, ctx: TaskContext = CONTEXT) -> dict[str, Any]:
    """A thread handler that asks for its context: progress, logs, its id."""
    for i in range(lines):
        ctx.log.info("line %d of %d", i + 1, lines)
    ctx.progress(100, "done")
    return {"id": ctx.id, "attempt": ctx.attempt, "db": ctx.resources.get("db")}


@task("typed.log")
async def chatty(lines: int, pause: float = 0.0, *, ctx: TaskContext = CONTEXT) -> int:
    """Write `lines` log records (a WARNING every tenth), `pause` seconds apart."""
    for i in range(lines):
        level = ctx.log.warning if i % 10 == 9 else ctx.log.info
        level("record %d", i + 1)
        if pause:
            await asyncio.sleep(pause)
    return lines


@task("typed.fail", retry_policy=RetryPolicy(max_attempts=2, initial_backoff=0.05))
async def fail(permanent: bool = False) -> None:
    if permanent:
        raise NonRetryableError("permanent")
    raise ValueError("try again")


# --- The process pool -----------------------------------------------------------------------


def _burn(seconds: float) -> float:
    """Spin for `seconds` of this thread's CPU time: a CPU-bound task of known size."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))
    return time.thread_time() - start


@task("typed.cpu.process", executor="process")
def cpu_process(seconds: float) -> float:
    return _burn(seconds)


@task("typed.window", executor="process")
def window(seconds: float) -> tuple[float, float, int]:
    """Burn `seconds` of CPU; when it ran (wall clock) and in which process."""
    started = time.time()
    _burn(seconds)
    return started, time.time(), os.getpid()


@task("typed.cpu.thread", executor="thread")
def cpu_thread(seconds: float) -> float:
    return _burn(seconds)


@task("typed.pid", executor="process")
def pid(note: str = "", ctx: TaskContext = CONTEXT) -> dict[str, Any]:
    """Report from the child: its pid, progress and a log line."""
    ctx.progress(50, "half")
    ctx.log.info("in the child %s", note)
    return {"pid": os.getpid(), "worker": int(os.environ.get("TASKYARD_TEST_WORKER_PID", 0))}


@task("typed.crash", executor="process", retry_policy=RetryPolicy(max_attempts=2))
def crash(how: str, ctx: TaskContext = CONTEXT) -> int:
    """Die the way `how` says on the first attempt; succeed on the next."""
    _record("crash-start", ctx.task_id, ctx.attempt, os.getpid())
    if ctx.attempt == 1:
        if how == "segfault":
            ctypes.string_at(0)
        os._exit(3)
    return os.getpid()


@task("typed.hog", executor="process", retry_policy=RetryPolicy(max_attempts=1))
def hog(megabytes: int, hold: float = 30.0) -> int:
    """Hold `megabytes` of touched memory for `hold` seconds."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block)


@task("typed.spin", executor="process", max_attempts=1)
def spin(cooperative: bool = False, ctx: TaskContext = CONTEXT) -> str:
    """Run until cancelled: polling `ctx.cancelled` if cooperative, deaf to it if not."""
    _record("spin-start", ctx.task_id, os.getpid())
    while True:
        if cooperative and ctx.cancelled:
            return "stopped"
        sum(range(1000))


# --- Hooks and middleware -------------------------------------------------------------------


@add.on_success
def _added(ctx: TaskContext, result: Any) -> None:
    _record("definition-success", ctx.task_id, result)


@fail.on_retry
def _failed_once(ctx: TaskContext, error: BaseException) -> None:
    _record("definition-retry", ctx.task_id, type(error).__name__)
    if os.environ.get("TASKYARD_TEST_BROKEN_HOOK"):
        raise RuntimeError("a broken on_retry hook")


worker = Worker(
    concurrency=4,
    shutdown_grace=5.0,
    tasks=[
        add, roundtrip, with_context, chatty, fail, cpu_process, cpu_thread, pid, crash,
        hog, spin, window,
    ],
    process_pool=ProcessPool(
        size=int(os.environ.get("TASKYARD_TEST_POOL_SIZE", "2")),
        max_tasks_per_child=int(os.environ.get("TASKYARD_TEST_MAX_TASKS", "0")) or None,
        max_memory_per_child=int(os.environ.get("TASKYARD_TEST_MAX_MEMORY_MB", "0")) * 2**20
        or None,
    ),
    task_log_lines=int(os.environ.get("TASKYARD_TEST_LOG_LINES", "1000")),
)  # fmt: skip


@worker.on_startup
async def _open(resources: Resources) -> None:
    if os.environ.get("TASKYARD_TEST_BROKEN_STARTUP"):
        raise ConnectionError("the database is not there")
    os.environ["TASKYARD_TEST_WORKER_PID"] = str(os.getpid())
    resources["db"] = "a pool"
    _record("startup", "-", os.getpid())


@worker.on_shutdown
async def _close(resources: Resources) -> None:
    _record("shutdown", "-", resources["db"].replace(" ", "-"))


@worker.middleware
async def _around(ctx: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    _record("before", ctx.task_id, ctx.type)
    if os.environ.get("TASKYARD_TEST_BROKEN_MIDDLEWARE"):
        raise RuntimeError("a broken middleware")
    try:
        result = await call_next()
    except Exception as exc:
        _record("after", ctx.task_id, "raised", type(exc).__name__)
        raise
    _record("after", ctx.task_id, "returned", result)
    return result


@worker.on_success
async def _succeeded(ctx: TaskContext, result: Any) -> None:
    _record("success", ctx.task_id, ctx.type)
    if os.environ.get("TASKYARD_TEST_BROKEN_HOOK"):
        raise RuntimeError("a broken on_success hook")


@worker.on_failure
async def _failed(ctx: TaskContext, error: BaseException) -> None:
    _record("failure", ctx.task_id, type(error).__name__)


@worker.on_retry
async def _retried(ctx: TaskContext, error: BaseException) -> None:
    _record("retry", ctx.task_id, type(error).__name__)
