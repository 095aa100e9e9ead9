"""Running one attempt's handler: its arguments, its executor, the middleware, its result.

A string-typed handler (``@worker.task("x")``) gets the context and returns any JSON value.
A typed task (``@task``) gets its arguments decoded from the payload by its type hints (a
mismatch fails the attempt with `ValidationError`, never retried) and the context where it
asked for one; its return value is encoded by its return type. Either runs on the event loop
(async), in the worker's thread pool, or in its process pool, inside the worker's middleware.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker_sdk._context import TaskContext
from worker_sdk._definition import Executor, TaskDefinition
from worker_sdk._lifecycle import Lifecycle
from worker_sdk._process_pool import Pool

if TYPE_CHECKING:
    from taskyard.v1 import task_pb2


@dataclass
class Handler:
    fn: Callable[..., Any]
    executor: Executor
    is_async: bool
    definition: TaskDefinition[Any, Any] | None = None

    @property
    def target(self) -> tuple[str, str]:
        """Where a process-pool child finds the definition: (module, qualified name)."""
        return self.fn.__module__, self.fn.__qualname__


class Runner:
    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        threads: ThreadPoolExecutor,
        processes: Pool | None,
        log_level: int,
    ) -> None:
        self._lifecycle = lifecycle
        self._threads = threads
        self._processes = processes
        self._log_level = log_level

    async def run(
        self,
        handler: Handler,
        ctx: TaskContext,
        key: str,
        on_progress: Callable[[task_pb2.Progress], None],
    ) -> Any:
        """The handler's return value (a Python value; `encode` makes it the wire's)."""
        definition = handler.definition
        if definition is None:
            core = self._core(handler, (ctx,), {})
        elif handler.executor == "process":
            definition.signature.decode(ctx.payload)  # a bad payload fails here, childless
            core = functools.partial(self._in_child, handler, ctx, key, on_progress)
        else:
            kwargs = definition.signature.decode(ctx.payload)
            if definition.signature.context is not None:
                kwargs[definition.signature.context] = ctx
            core = self._core(handler, (), kwargs)
        return await self._lifecycle.wrap(ctx, core)()

    def _core(
        self, handler: Handler, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[], Any]:
        fn = handler.fn
        if handler.executor == "async":

            async def on_loop() -> Any:
                value = fn(*args, **kwargs)
                return await value if asyncio.iscoroutine(value) else value

            return on_loop

        def in_thread() -> Any:
            value = fn(*args, **kwargs)
            # An async function given executor="thread" gets an event loop of its own.
            return asyncio.run(value) if asyncio.iscoroutine(value) else value

        async def on_thread() -> Any:
            # The thread runs in a copy of this context: the handler's logs and spans
            # belong to its task.
            run = contextvars.copy_context().run
            return await asyncio.get_running_loop().run_in_executor(self._threads, run, in_thread)

        return on_thread

    async def _in_child(
        self,
        handler: Handler,
        ctx: TaskContext,
        key: str,
        on_progress: Callable[[task_pb2.Progress], None],
    ) -> Any:
        assert self._processes is not None and handler.definition is not None
        data = await self._processes.run(
            key,
            handler.target,
            ctx.payload,
            ctx._assignment,
            log_level=self._log_level,
            on_progress=on_progress,
            on_log=ctx._log_sink or (lambda when, level, message: None),
        )
        # Middleware and hooks see the Python value, as with the other executors.
        return handler.definition.returns.decode(data)


def encode(handler: Handler, value: Any) -> Any:
    """The handler's return value as the completion's payload data."""
    if handler.definition is None:
        return value
    return handler.definition.returns.encode(value)
