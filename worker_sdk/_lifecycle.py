"""A worker's lifecycle hooks and middleware, and how each one's failure is contained.

* Start-up hooks run before the worker connects and fill `resources` (a database pool, an
  HTTP client), which handlers read as ``ctx.resources``. One that raises stops the worker:
  its handlers would run without what they need.
* Shutdown hooks run after the last task ended, in reverse order. One that raises is logged;
  the others still run.
* Middleware wraps every attempt, outermost first: ``await call_next()`` runs the rest of the
  chain and the handler, and returns its result or raises its exception. Middleware that
  raises fails the attempt as the handler would (retried per the task's policy).
* ``on_success``, ``on_failure`` and ``on_retry`` run after the broker recorded the outcome
  (its answer says whether a failure will be retried): the task definition's hooks, then the
  worker's. One that raises is logged with the task id; the outcome stands and the worker
  goes on.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from worker_sdk._context import TaskContext

log = logging.getLogger("taskyard.worker")

Resources = dict[str, Any]
CallNext = Callable[[], Awaitable[Any]]
Middleware = Callable[[TaskContext, CallNext], Awaitable[Any]]
LifeHook = Callable[[Resources], Awaitable[None] | None]
SuccessHook = Callable[[TaskContext, Any], Awaitable[None] | None]
FailureHook = Callable[[TaskContext, BaseException], Awaitable[None] | None]
Kind = Literal["success", "failure", "retry"]


async def _call(hook: Callable[..., Any], *args: Any) -> None:
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__qualname__", repr(hook))


class Lifecycle:
    def __init__(self) -> None:
        self.startup: list[LifeHook] = []
        self.shutdown: list[LifeHook] = []
        self.middleware: list[Middleware] = []
        self.hooks: dict[Kind, list[Callable[..., Any]]] = {
            "success": [],
            "failure": [],
            "retry": [],
        }
        self.resources: Resources = {}

    async def start(self) -> None:
        for hook in self.startup:
            await _call(hook, self.resources)

    async def stop(self) -> None:
        for hook in reversed(self.shutdown):
            try:
                await _call(hook, self.resources)
            except Exception:
                log.exception("shutdown hook %s failed; running the others", _name(hook))

    def wrap(self, ctx: TaskContext, core: CallNext) -> CallNext:
        """`core` inside every middleware, the first registered outermost."""
        call = core
        for middleware in reversed(self.middleware):
            call = functools.partial(middleware, ctx, call)
        return call

    async def outcome(
        self,
        kind: Kind,
        ctx: TaskContext,
        value: Any,
        own: list[Callable[..., Any]],
        fields: dict[str, Any],
    ) -> None:
        """Run the definition's (`own`) then the worker's hooks of `kind`, each contained."""
        for hook in [*own, *self.hooks[kind]]:
            try:
                await _call(hook, ctx, value)
            except Exception:
                log.exception(
                    "on_%s hook %s failed for task %s; the task's outcome stands",
                    kind,
                    _name(hook),
                    ctx.task_id,
                    extra=fields,
                )
