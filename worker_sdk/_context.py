"""What a handler sees of its task: input, progress reporting, deadline, cancellation."""

from __future__ import annotations

import asyncio
import difflib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from google.protobuf import timestamp_pb2

from taskyard.v1 import task_pb2, worker_service_pb2
from worker_sdk._errors import NonRetryableError, Retry
from worker_sdk._node_context import ChannelOf, NodeContext
from worker_sdk._payload import from_payload
from worker_sdk._task_log import task_logger


class TaskContextError(AttributeError, NonRetryableError):
    """A handler asked its context for something it does not have: a bug, never retried."""


class TaskContext:
    """Passed to every handler.

    Attributes:
        task_id: The task's id (also ``id``, as on `Task`).
        type: The task's type.
        queue: The queue it came from.
        priority: Its priority.
        attempt: This attempt's number, counted from 1. Lease losses (a worker
            that died or went silent) and `RetryTask` also advance it.
        max_attempts: The number of the last attempt a failure may have: when
            ``attempt == max_attempts``, a retryable failure makes the task DEAD.
            The broker moves it on with each lost lease (which uses no attempt)
            and after `RetryTask`, so it never falls behind ``attempt``.
        labels: The task's labels.
        resources: What the worker's start-up hooks put there (a database pool, an HTTP
            client), by name. Empty in a process-pool child: open such things there.

    Reading an attribute the context does not have raises `TaskContextError`,
    which fails the task at once (no retries) and names the closest attribute.
    """

    def __init__(
        self,
        assignment: worker_service_pb2.Assignment,
        report: Callable[[str, task_pb2.Progress], None],
        *,
        log_sink: Callable[[float, int, str], None] | None = None,
        log_level: int = logging.INFO,
        resources: dict[str, Any] | None = None,
        detached: bool = False,
        channel_of: ChannelOf | None = None,
    ) -> None:
        self.task_id = assignment.task_id
        self.type = assignment.type
        self.queue = assignment.queue
        self.priority = assignment.priority
        self.attempt = assignment.attempt
        self.max_attempts = assignment.max_attempts
        self.labels = dict(assignment.labels)
        self.resources: dict[str, Any] = resources if resources is not None else {}
        self._assignment = assignment
        self._report = report
        self._payload: Any = _UNSET
        self._cancelled = _Flag()
        self._soft = _Flag()
        self._deadline = _seconds(assignment.lease_expire_time)
        self._hard: float | None = (
            _seconds(assignment.deadline) if assignment.HasField("deadline") else None
        )
        self._soft_at: float | None = (
            _seconds(assignment.soft_deadline) if assignment.HasField("soft_deadline") else None
        )
        # Detached (in a process-pool child) there is no loop: `report` is then safe to call
        # from any thread.
        self._loop: asyncio.AbstractEventLoop | None = (
            None if detached else asyncio.get_running_loop()
        )
        self._on_soft: Callable[[], None] | None = None
        self._progress: task_pb2.Progress | None = None
        self._log_sink = log_sink
        self._log_level = log_level
        self._logger: logging.Logger | None = None
        self._workflow: NodeContext | None = None
        if assignment.workflow_id:
            self._workflow = NodeContext(assignment, channel_of or _no_channel, self._loop)

    @property
    def id(self) -> str:
        """The task's id: the same as ``task_id``, spelled as on `Task`."""
        return self.task_id

    if not TYPE_CHECKING:  # type checkers keep reporting unknown attributes themselves

        def __getattr__(self, name: str) -> Any:
            # Only called for names that do not exist: a typo in a handler.
            if name.startswith("_"):
                raise AttributeError(name)
            public = sorted(n for n in dir(type(self)) if not n.startswith("_"))
            public += ["attempt", "labels", "max_attempts", "priority", "queue", "resources"]
            public += ["task_id", "type"]
            close = difflib.get_close_matches(name, public, n=1)
            hint = f"; did you mean ctx.{close[0]}?" if close else "."
            raise TaskContextError(
                f"TaskContext has no attribute {name!r}{hint} It has: "
                f"{', '.join(sorted(set(public)))}. The task fails without retries: this is "
                "a bug in the handler"
            )

    @property
    def log(self) -> logging.Logger:
        """A logger whose records are stored with this attempt in the broker.

        ``ctx.log.info("resized %s", path)`` from async, thread and process handlers alike;
        ``taskyard logs ID`` and ``Client.logs`` read them back. Records at the worker's
        ``task_log_level`` (INFO by default) and above are kept, up to the worker's limits
        per attempt; they also reach the worker's own log through ``taskyard.task``.
        """
        if self._logger is None:
            sink = self._log_sink or (lambda when, level, message: None)
            self._logger = task_logger(self.task_id, sink, self._log_level)
        return self._logger

    @property
    def workflow(self) -> NodeContext | None:
        """For a workflow node: its workflow, its parents' results, spawning. None otherwise."""
        return self._workflow

    @property
    def payload(self) -> Any:
        """The task's input: decoded JSON, bytes, or None."""
        if self._payload is _UNSET:
            has = self._assignment.HasField("payload")
            self._payload = from_payload(self._assignment.payload) if has else None
        return self._payload

    @property
    def lease_deadline(self) -> datetime:
        """When the lease ends unless extended; the SDK heartbeats automatically."""
        return datetime.fromtimestamp(self._deadline, tz=UTC)

    @property
    def deadline(self) -> datetime | None:
        """The attempt's hard deadline (its execution timeout), or None.

        At this time the broker records a timeout and the handler is stopped
        (async) or its result discarded (thread).
        """
        return None if self._hard is None else datetime.fromtimestamp(self._hard, tz=UTC)

    @property
    def soft_deadline(self) -> datetime | None:
        """When the soft timeout warns the handler to wrap up, or None."""
        return None if self._soft_at is None else datetime.fromtimestamp(self._soft_at, tz=UTC)

    @property
    def soft_timeout_exceeded(self) -> bool:
        """True once the soft deadline has passed: finish up or checkpoint now."""
        return self._soft.is_set()

    def wait_soft_timeout(self, timeout: float | None = None) -> bool:
        """Block a thread handler until the soft deadline or the timeout; True if reached."""
        return self._soft.wait(timeout)

    def _soft_timeout(self) -> None:
        self._soft.set()
        if self._on_soft is not None:
            self._on_soft()

    def on_soft_timeout(self, callback: Callable[[], None]) -> None:
        """Run `callback` (on the event loop) when the soft deadline passes."""
        self._on_soft = callback
        if self._soft.is_set():
            callback()

    @property
    def cancelled(self) -> bool:
        """True once the broker asked this task to stop (or its lease was lost).

        Async handlers are cancelled for you (asyncio.CancelledError); thread
        handlers should poll this and return early.
        """
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block a thread handler until cancellation or the timeout; True if cancelled."""
        return self._cancelled.wait(timeout)

    def retry(
        self, delay: float | timedelta, message: str = "", *, type: str | None = None
    ) -> NoReturn:
        """Fail this attempt and have the next one run after `delay`: raises `Retry`.

        Use it as Celery's ``self.retry(countdown=...)``, e.g. with an upstream's
        ``Retry-After``. The delay is capped at the retry policy's ``max_backoff``
        and the attempt counts against ``max_attempts``.

        Args:
            delay: Seconds (or a timedelta); 0 means at once.
            message: The error message recorded with the attempt.
            type: The error type reported (default ``"Retry"``).

        Raises:
            Retry: always.
        """
        raise Retry(message, delay=delay, type=type)

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> None:
        """Report progress; callable from async and thread handlers alike.

        Unset arguments keep their last value. Reports are coalesced, so
        calling this often is cheap.
        """
        current = self._last_progress()
        update = task_pb2.Progress(
            percent=current.percent if percent is None else float(percent),
            message=current.message if message is None else message,
            step=current.step if step is None else step,
            total_steps=current.total_steps if total_steps is None else total_steps,
        )
        self._progress = update
        if self._loop is None or _in_loop(self._loop):
            self._report(self.task_id, update)
        else:
            self._loop.call_soon_threadsafe(self._report, self.task_id, update)

    def _last_progress(self) -> task_pb2.Progress:
        return task_pb2.Progress() if self._progress is None else self._progress

    def _set_deadline(self, seconds: float) -> None:
        self._deadline = seconds

    def _cancel(self) -> None:
        self._cancelled.set()


_MAKING = threading.Lock()


class _Flag:
    """A `threading.Event` made only once a thread waits on it.

    Every task has two flags and almost none is ever waited on; an Event (a
    Condition and a lock) per flag was a tenth of the worker's CPU per no-op
    task. `set` needs no lock: it stores True before reading `_event`, and a
    waiter reads the flag after storing `_event`, so one of them sees the other.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with _MAKING:
            if self._event is None:
                self._event = threading.Event()
        if self._set:
            self._event.set()
        return self._event.wait(timeout)


class _Unset:
    pass


_UNSET: Any = _Unset()


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _ContextMarker:
    """The default of a typed task's context parameter (see `CONTEXT`)."""

    def __repr__(self) -> str:
        return "CONTEXT"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            "CONTEXT stands in for the TaskContext a worker passes; this handler was called "
            "directly, outside a worker"
        )


# Typed as a TaskContext so that `ctx: TaskContext = CONTEXT` type-checks; the worker always
# passes the real context to a parameter annotated TaskContext.
CONTEXT: TaskContext = _ContextMarker()  # type: ignore[assignment]


def _no_channel() -> None:
    return None
