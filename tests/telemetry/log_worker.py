"""A worker whose handlers log with plain `logging` (`tests.telemetry.log_worker:worker`)."""

from __future__ import annotations

import logging

from worker_sdk import TaskContext, Worker

worker = Worker(concurrency=2, shutdown_grace=5.0)
log = logging.getLogger("tests.handler")


@worker.task("log.async")
async def log_async(ctx: TaskContext) -> str:
    log.info("hello from an async handler")
    return "ok"


@worker.task("log.sync")
def log_sync(ctx: TaskContext) -> str:
    log.info("hello from a thread handler")
    return "ok"


@worker.task("log.fail")
async def log_fail(ctx: TaskContext) -> None:
    raise ValueError("deliberate")
