"""Typed task definitions: one object that the submitting code and the worker both import.

``@task("resize")`` turns a function into a `TaskDefinition`. Its name is the task type on
the wire; its parameters are the payload (a JSON object of named arguments, checked and
converted by their type hints, see `_convert`); its return type is the result's. A client
submits it with ``await resize.submit(client, path="a.png", width=100)``, which mypy checks
against the function's parameters (ParamSpec), and gets a `TaskHandle` whose ``result()``
is typed by the function's return type. A worker runs it after ``Worker(tasks=[resize])``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from worker_sdk._convert import Returns, Signature, return_hint
from worker_sdk._lifecycle import FailureHook, SuccessHook
from worker_sdk._requests import spec_of
from worker_sdk._types import LogRecord, RetryPolicy, Task, TaskSpec, Timeouts

if TYPE_CHECKING:
    from worker_sdk._client import Client, SyncClient
    from worker_sdk._portal import Portal

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)

Executor = Literal["async", "thread", "process"]
EXECUTORS: tuple[Executor, ...] = ("async", "thread", "process")


class _Unset:
    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """How a typed task is submitted unless a call says otherwise (see `Client.submit`)."""

    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    labels: tuple[tuple[str, str], ...] = ()
    max_attempts: int | None = None
    request_id: str | None = None
    retry_policy: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    concurrency_key: str | None = None


@dataclasses.dataclass(eq=False)
class Hooks:
    """A definition's own on_success, on_failure and on_retry hooks, shared by its copies."""

    success: list[SuccessHook] = dataclasses.field(default_factory=list)
    failure: list[FailureHook] = dataclasses.field(default_factory=list)
    retry: list[FailureHook] = dataclasses.field(default_factory=list)


class TaskDefinition(Generic[P, R]):
    """A task type bound to its function, its argument and result types and its defaults.

    Made by `task`; see there. ``options(...)`` returns a copy with other defaults.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        executor: Executor,
        options: Options,
        hooks: Hooks | None = None,
    ) -> None:
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        self.name = name
        self.fn = fn
        self.executor: Executor = executor
        self.defaults = options
        self.hooks = hooks or Hooks()
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature: Signature | None = None
        self._returns: Returns[R] | None = None

    def __repr__(self) -> str:
        return f"<TaskDefinition {self.name!r} ({self.executor})>"

    # Type hints are read on first use, so that a module may define its types after its tasks.
    @property
    def signature(self) -> Signature:
        if self._signature is None:
            self._signature = Signature.of(self.fn, self.name)
        return self._signature

    @property
    def returns(self) -> Returns[R]:
        if self._returns is None:
            self._returns = Returns(return_hint(self.fn, self.name))
        return self._returns

    def options(
        self,
        *,
        queue: str | None = UNSET,
        priority: int = UNSET,
        run_at: datetime | None = UNSET,
        delay: float | timedelta | None = UNSET,
        labels: dict[str, str] | None = UNSET,
        max_attempts: int | None = UNSET,
        request_id: str | None = UNSET,
        retry_policy: RetryPolicy | None = UNSET,
        timeouts: Timeouts | None = UNSET,
        concurrency_key: str | None = UNSET,
    ) -> TaskDefinition[P, R]:
        """A copy that submits with these options (the others as before).

        Example::

            await resize.options(priority=9, run_at=tomorrow).submit(client, path="a.png")
        """
        given = {k: v for k, v in locals().items() if k != "self" and v is not UNSET}
        if "labels" in given:
            given["labels"] = tuple(sorted((given["labels"] or {}).items()))
        copy = TaskDefinition[P, R](
            self.name,
            self.fn,
            executor=self.executor,
            options=dataclasses.replace(self.defaults, **given),
            hooks=self.hooks,
        )
        copy._signature, copy._returns = self._signature, self._returns
        return copy

    # --- Building submissions ---------------------------------------------------------------

    def spec(self, *args: P.args, **kwargs: P.kwargs) -> TaskSpec:
        """The task to submit for this call, its arguments checked (for `Client.submit_many`).

        Raises:
            ValidationError: an argument does not match its type; nothing is sent.
        """
        payload = self.signature.encode(args, kwargs)
        o = self.defaults
        return spec_of(
            self.name,
            payload,
            queue=o.queue,
            priority=o.priority,
            run_at=o.run_at,
            delay=o.delay,
            labels=dict(o.labels),
            max_attempts=o.max_attempts,
            request_id=o.request_id,
            retry_policy=o.retry_policy,
            timeouts=o.timeouts,
            concurrency_key=o.concurrency_key,
        )

    # Methods that hand out results are overloaded on `self`: for an async function R is a
    # Coroutine, and the handles are typed by what it returns. (Overloading the decorator on
    # async/sync instead would make mypy give up, Any, whenever a hint contains Any.)

    @overload
    def call(
        self: TaskDefinition[Q, Coroutine[Any, Any, T]], *args: Q.args, **kwargs: Q.kwargs
    ) -> TaskCall[T]: ...

    @overload
    def call(self: TaskDefinition[Q, T], *args: Q.args, **kwargs: Q.kwargs) -> TaskCall[T]: ...

    def call(self, *args: Any, **kwargs: Any) -> TaskCall[Any]:
        """This call, checked, for `submit_many` (keeps the result type for the handles)."""
        return TaskCall(self.spec(*args, **kwargs), self.returns)

    # --- Submitting ---------------------------------------------------------------------------

    @overload
    def submit(
        self: TaskDefinition[Q, Coroutine[Any, Any, T]],
        client: SyncClient,
        /,
        *args: Q.args,
        **kwargs: Q.kwargs,
    ) -> SyncTaskHandle[T]: ...

    @overload
    def submit(
        self: TaskDefinition[Q, Coroutine[Any, Any, T]],
        client: Client,
        /,
        *args: Q.args,
        **kwargs: Q.kwargs,
    ) -> Coroutine[Any, Any, TaskHandle[T]]: ...

    @overload
    def submit(
        self: TaskDefinition[Q, T], client: SyncClient, /, *args: Q.args, **kwargs: Q.kwargs
    ) -> SyncTaskHandle[T]: ...

    @overload
    def submit(
        self: TaskDefinition[Q, T], client: Client, /, *args: Q.args, **kwargs: Q.kwargs
    ) -> Coroutine[Any, Any, TaskHandle[T]]: ...

    def submit(self, client: Client | SyncClient, /, *args: Any, **kwargs: Any) -> Any:
        """Submit one task; await it with a `Client`, call it plainly with a `SyncClient`.

        The arguments are checked against the function's parameters first (by mypy, and at
        run time by their type hints).

        Returns:
            A `TaskHandle` (or, with a SyncClient, a `SyncTaskHandle`) of the new task.

        Raises:
            ValidationError: an argument does not match its type; nothing is sent.
            TaskyardError: the broker refused the task or could not be reached.
        """
        spec = self.spec(*args, **kwargs)
        sync = _sync_parts(client)
        if sync is not None:
            portal, inner = sync
            return SyncTaskHandle(portal, portal.call(_submit, inner, spec, self.returns))
        return _submit(client, spec, self.returns)  # type: ignore[arg-type]

    @overload
    def submit_many(
        self, client: SyncClient, calls: Iterable[TaskCall[T]], /
    ) -> list[SyncTaskHandle[T]]: ...

    @overload
    def submit_many(
        self, client: Client, calls: Iterable[TaskCall[T]], /
    ) -> Coroutine[Any, Any, list[TaskHandle[T]]]: ...

    def submit_many(self, client: Client | SyncClient, calls: Iterable[TaskCall[Any]], /) -> Any:
        """Submit many calls (made with `call`) in chunks; see `Client.submit_many`.

        Raises:
            BatchSubmitError: not all were created; it says which were.
        """
        items = list(calls)
        sync = _sync_parts(client)
        if sync is not None:
            portal, inner = sync
            return [SyncTaskHandle(portal, h) for h in portal.call(_submit_many, inner, items)]
        return _submit_many(client, items)  # type: ignore[arg-type]

    @overload
    def handle(
        self: TaskDefinition[Q, Coroutine[Any, Any, T]], client: SyncClient, task_id: str, /
    ) -> SyncTaskHandle[T]: ...

    @overload
    def handle(
        self: TaskDefinition[Q, Coroutine[Any, Any, T]], client: Client, task_id: str, /
    ) -> TaskHandle[T]: ...

    @overload
    def handle(
        self: TaskDefinition[Q, T], client: SyncClient, task_id: str, /
    ) -> SyncTaskHandle[T]: ...

    @overload
    def handle(self: TaskDefinition[Q, T], client: Client, task_id: str, /) -> TaskHandle[T]: ...

    def handle(self, client: Client | SyncClient, task_id: str, /) -> Any:
        """A handle on a task of this type submitted earlier, by its id."""
        sync = _sync_parts(client)
        if sync is not None:
            portal, inner = sync
            return SyncTaskHandle(portal, TaskHandle(inner, task_id, self.returns))
        return TaskHandle(client, task_id, self.returns)  # type: ignore[arg-type]

    # --- Hooks --------------------------------------------------------------------------------

    def on_success(self, hook: SuccessHook) -> SuccessHook:
        """Run ``hook(ctx, result)`` after a task of this type succeeded (see Worker.on_success)."""
        self.hooks.success.append(hook)
        return hook

    def on_failure(self, hook: FailureHook) -> FailureHook:
        """Run ``hook(ctx, error)`` after an attempt failed for good (FAILED or DEAD)."""
        self.hooks.failure.append(hook)
        return hook

    def on_retry(self, hook: FailureHook) -> FailureHook:
        """Run ``hook(ctx, error)`` after an attempt failed and the task will be retried."""
        self.hooks.retry.append(hook)
        return hook


class TaskCall(Generic[R_co]):
    """One checked call of a typed task, ready for `submit_many`."""

    def __init__(self, spec: TaskSpec, returns: Returns[Any]) -> None:
        self.spec = spec
        self.returns = returns


async def _submit(client: Client, spec: TaskSpec, returns: Returns[R]) -> TaskHandle[R]:
    task = await client._submit_spec(spec)
    return TaskHandle(client, task.id, returns, task)


async def _submit_many(client: Client, calls: list[TaskCall[R]]) -> list[TaskHandle[R]]:
    tasks = await client.submit_many(c.spec for c in calls)
    return [TaskHandle(client, t.id, c.returns, t) for t, c in zip(tasks, calls, strict=True)]


def _sync_parts(client: Any) -> tuple[Portal, Client] | None:
    from worker_sdk._client import SyncClient

    if isinstance(client, SyncClient):
        return client._portal, client._async
    return None


class TaskHandle(Generic[R]):
    """A submitted typed task.

    Attributes:
        id: The task's id.
        task: The task as the broker created it (None for a handle made from an id).
    """

    def __init__(
        self, client: Client, task_id: str, returns: Returns[R], task: Task | None = None
    ) -> None:
        self.id = task_id
        self.task = task
        self._client = client
        self._returns = returns

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    async def result(self, *, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its result, converted to the return type.

        Raises:
            TaskFailed: the task ended failed, dead, cancelled or expired.
            TimeoutError: it did not finish within ``timeout`` seconds.
            ValidationError: the result does not match the return type.
        """
        return self._returns.decode(await self._client.wait(self.id, timeout=timeout))

    def watch(self, *, timeout: float | None = None) -> AsyncIterator[Task]:
        """The task on every state change and progress report until it finishes."""
        return self._client.watch(self.id, timeout=timeout)

    async def get(self) -> Task:
        """The task as it is now."""
        return await self._client.get(self.id)

    async def cancel(self, reason: str = "") -> Task:
        """Cancel the task; a running one is asked to stop."""
        return await self._client.cancel(self.id, reason)

    def logs(self, *, follow: bool = False) -> AsyncIterator[LogRecord]:
        """The task's log records (``ctx.log``); ``follow`` waits for more until it finishes."""
        return self._client.logs(self.id, follow=follow)


class SyncTaskHandle(Generic[R]):
    """A `TaskHandle` for threads and scripts: the same methods, blocking."""

    def __init__(self, portal: Portal, handle: TaskHandle[R]) -> None:
        self._portal = portal
        self._async = handle
        self.id = handle.id
        self.task = handle.task

    def __repr__(self) -> str:
        return f"<SyncTaskHandle {self.id}>"

    def result(self, *, timeout: float | None = None) -> R:
        """As `TaskHandle.result`, blocking."""
        return self._portal.call(self._async.result, timeout=timeout)

    def watch(self, *, timeout: float | None = None) -> Iterator[Task]:
        """As `TaskHandle.watch`, a plain iterator."""
        return self._portal.iterate(self._async.watch(timeout=timeout))

    def get(self) -> Task:
        return self._portal.call(self._async.get)

    def cancel(self, reason: str = "") -> Task:
        return self._portal.call(self._async.cancel, reason)

    def logs(self, *, follow: bool = False) -> Iterator[LogRecord]:
        return self._portal.iterate(self._async.logs(follow=follow))


class _Decorator:
    def __init__(self, name: str, executor: Executor | None, options: Options) -> None:
        self._name = name
        self._executor = executor
        self._options = options

    def __call__(self, fn: Callable[P, R]) -> TaskDefinition[P, R]:
        default: Executor = "async" if inspect.iscoroutinefunction(fn) else "thread"
        definition: TaskDefinition[P, R] = TaskDefinition(
            self._name, fn, executor=self._executor or default, options=self._options
        )
        if definition.executor == "process" and "<locals>" in fn.__qualname__:
            raise TypeError(
                f"task {self._name!r} runs in a process pool, so its function must be "
                "importable: define it at module level"
            )
        return definition


def task(
    name: str,
    *,
    executor: Executor | None = None,
    queue: str | None = None,
    priority: int = 0,
    labels: dict[str, str] | None = None,
    max_attempts: int | None = None,
    retry_policy: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    concurrency_key: str | None = None,
) -> _Decorator:
    """Make the decorated function a typed task definition.

    Args:
        name: The task type on the wire (what ``taskyard submit`` and other languages use).
        executor: Where the worker runs it: ``"async"`` (the event loop; the default for
            async functions), ``"thread"`` (a thread pool; the default for plain functions)
            or ``"process"`` (the worker's process pool, for CPU-bound work).
        queue, priority, labels, max_attempts, retry_policy, timeouts, concurrency_key:
            Defaults for every submission; ``.options(...)`` overrides them per call.

    The function's parameters are the task's arguments, converted by their type hints; a
    parameter annotated `TaskContext` receives the context instead. Give it the default
    `CONTEXT`, so that mypy does not ask ``submit`` for it. Example::

        @task("resize", queue="images", executor="process")
        def resize(path: str, width: int = 640, ctx: TaskContext = CONTEXT) -> Thumbnail:
            ...

        handle = await resize.submit(client, path="a.png", width=100)
        thumbnail = await handle.result(timeout=60)
    """
    options = Options(
        queue=queue,
        priority=priority,
        labels=tuple(sorted((labels or {}).items())),
        max_attempts=max_attempts,
        retry_policy=retry_policy,
        timeouts=timeouts,
        concurrency_key=concurrency_key,
    )
    return _Decorator(name, executor, options)
