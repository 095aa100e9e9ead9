"""What a worker runs: its handlers and typed definitions, hooks and middleware, queues.

`Worker` inherits these; they only record what to do, before the worker starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from worker_sdk._context import TaskContext
from worker_sdk._definition import TaskDefinition
from worker_sdk._invoke import Handler
from worker_sdk._lifecycle import (
    FailureHook,
    Lifecycle,
    LifeHook,
    Middleware,
    Resources,
    SuccessHook,
)

H = TypeVar("H", bound=Callable[..., Any])


class Registration:
    _handlers: dict[str, Handler]
    _lifecycle: Lifecycle
    _queues: list[str] | None

    def task(self, type: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``type``.

        The handler takes a `TaskContext` and returns a JSON-serialisable value
        or bytes. Async functions run on the event loop; plain functions run in
        a thread pool of ``concurrency`` threads.
        """

        def register(fn: H) -> H:
            self.register(type, fn)
            return fn

        return register

    def register(self, type: str, fn: Callable[[TaskContext], Any]) -> None:
        """Register `fn` (taking a `TaskContext`) as the handler of ``type``."""
        is_async = inspect.iscoroutinefunction(fn)
        self._add(type, Handler(fn, "async" if is_async else "thread", is_async))

    def include(self, *definitions: TaskDefinition[Any, Any]) -> None:
        """Run these typed task definitions (made with ``@task``)."""
        for d in definitions:
            self._add(d.name, Handler(d.fn, d.executor, d.is_async, d))

    def _add(self, type: str, handler: Handler) -> None:
        if type in self._handlers:
            raise ValueError(f"a handler for {type!r} is already registered")
        self._handlers[type] = handler

    # --- Hooks and middleware -------------------------------------------------------------------

    def on_startup(self, hook: LifeHook) -> LifeHook:
        """Run ``hook(resources)`` before connecting; what it puts in the dict, handlers find
        in ``ctx.resources``. A start-up hook that raises stops the worker."""
        self._lifecycle.startup.append(hook)
        return hook

    def on_shutdown(self, hook: LifeHook) -> LifeHook:
        """Run ``hook(resources)`` after the last task ended (reverse order of registration);
        one that raises is logged and the others still run."""
        self._lifecycle.shutdown.append(hook)
        return hook

    def middleware(self, middleware: Middleware) -> Middleware:
        """Wrap every attempt: ``async def m(ctx, call_next)`` returns ``await call_next()``
        (or raises); the first registered is outermost. One that raises fails the attempt."""
        self._lifecycle.middleware.append(middleware)
        return middleware

    def on_success(self, hook: SuccessHook) -> SuccessHook:
        """Run ``hook(ctx, result)`` once the broker recorded a task's success."""
        self._lifecycle.hooks["success"].append(hook)
        return hook

    def on_failure(self, hook: FailureHook) -> FailureHook:
        """Run ``hook(ctx, error)`` once the broker recorded a failure that is final."""
        self._lifecycle.hooks["failure"].append(hook)
        return hook

    def on_retry(self, hook: FailureHook) -> FailureHook:
        """Run ``hook(ctx, error)`` once the broker recorded a failure it will retry."""
        self._lifecycle.hooks["retry"].append(hook)
        return hook

    @property
    def resources(self) -> Resources:
        """What the start-up hooks made (``ctx.resources`` in handlers)."""
        return self._lifecycle.resources

    @property
    def task_types(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def queues(self) -> list[str]:
        """The queues consumed: as given, or ``default`` and the typed definitions' queues."""
        if self._queues is not None:
            return list(self._queues)
        named = [h.definition.defaults.queue for h in self._handlers.values() if h.definition]
        return list(dict.fromkeys(["default", *(q for q in named if q)]))
