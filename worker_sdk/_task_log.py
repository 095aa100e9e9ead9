"""Per-task logs: what a handler writes with ``ctx.log``, kept for the broker, bounded.

Each attempt gets its own `logging.Logger` (not registered in the logging manager, so that
a busy worker does not grow it), whose records land in the attempt's `TaskLog` and also
propagate to the ``taskyard.task`` logger, so they show in the worker's own output as well.
The worker sends the buffered records with the attempt's next heartbeat. An attempt keeps at
most `max_lines` records and `max_bytes` of text; past either, one WARNING record says that
the rest were dropped (the broker enforces its own limits the same way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskyard.v1 import task_pb2

MAX_MESSAGE_BYTES = 8192
DEFAULT_MAX_LINES = 1000
DEFAULT_MAX_BYTES = 256 * 1024

_LEVELS = (
    (logging.CRITICAL, task_pb2.TASK_LOG_LEVEL_CRITICAL),
    (logging.ERROR, task_pb2.TASK_LOG_LEVEL_ERROR),
    (logging.WARNING, task_pb2.TASK_LOG_LEVEL_WARNING),
    (logging.INFO, task_pb2.TASK_LOG_LEVEL_INFO),
)


def wire_level(levelno: int) -> task_pb2.TaskLogLevel.ValueType:
    for floor, level in _LEVELS:
        if levelno >= floor:
            return level
    return task_pb2.TASK_LOG_LEVEL_DEBUG


def clip(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message` cut to `limit` UTF-8 bytes at a character boundary, ending in "…"."""
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(errors="ignore") + "…"


class TaskLog:
    """One attempt's log records waiting for a heartbeat; safe to fill from any thread."""

    def __init__(
        self,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._notify = notify
        self._lock = threading.Lock()
        self._pending: list[task_pb2.TaskLogRecord] = []
        self._lines = 0
        self._bytes = 0
        self._truncated = False

    def add(self, when: float, levelno: int, message: str) -> None:
        text = clip(message)
        with self._lock:
            if self._truncated:
                return
            size = len(text.encode())
            if self._lines + 1 > self._max_lines or self._bytes + size > self._max_bytes:
                self._truncated = True
                levelno, when = logging.WARNING, time.time()
                text = (
                    f"[log truncated: this attempt reached the limit of {self._max_lines} "
                    f"lines or {self._max_bytes} bytes; later lines are dropped]"
                )
            self._lines += 1
            self._bytes += size
            record = task_pb2.TaskLogRecord(level=wire_level(levelno), message=text)
            record.time.FromNanoseconds(int(when * 1e9))
            self._pending.append(record)
        self._notify()

    def take(self) -> list[task_pb2.TaskLogRecord]:
        """The records not taken yet, oldest first."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    @property
    def waiting(self) -> bool:
        return bool(self._pending)


class _Capture(logging.Handler):
    def __init__(self, sink: Callable[[float, int, str], None]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self._sink(record.created, record.levelno, message)
        except Exception:  # a logging call must never fail the handler
            self.handleError(record)


PARENT = "taskyard.task"


def task_logger(
    task_id: str, sink: Callable[[float, int, str], None], level: int
) -> logging.Logger:
    """A logger whose records go to `sink` (and on to the ``taskyard.task`` logger)."""
    logger = logging.Logger(f"{PARENT}.{task_id}", level)
    logger.parent = logging.getLogger(PARENT)
    logger.addHandler(_Capture(sink))
    return logger
