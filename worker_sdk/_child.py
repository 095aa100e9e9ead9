"""Inside a process-pool child: run one task at a time for the worker that started us.

The child talks to its worker over one duplex pipe. The worker sends ``run`` (the task's
definition by module and name, its JSON payload, its assignment), ``cancel``, ``soft`` and
``exit``; the child sends ``progress`` and ``log`` while a task runs and ``done`` when it
ends, with the JSON result or the error. A reader thread takes the worker's messages, so
that a cancellation reaches ``ctx.cancelled`` while the main thread runs the handler.

The child imports the definition's module itself and decodes the payload itself: nothing
of the user's is pickled, only JSON-able data and the assignment (a protobuf message).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import queue
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from taskyard.v1 import task_pb2, worker_service_pb2
from worker_sdk._context import TaskContext
from worker_sdk._errors import failure_of

Message = tuple[Any, ...]


def definition(module: str, qualname: str) -> Any:
    """The TaskDefinition named `module:qualname` (what ``@task`` left in the module)."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class _Child:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue[Message | None] = queue.Queue()
        self._ctx: TaskContext | None = None
        self._job_id = ""

    def send(self, message: Message) -> None:
        with self._send_lock:
            self._conn.send(message)

    def read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: nothing to report to
            kind = message[0]
            ctx = self._ctx
            if kind == "run":
                self._jobs.put(message)
            elif kind == "exit":
                self._jobs.put(None)
                return
            elif ctx is not None and message[1] == self._job_id:
                if kind == "cancel":
                    ctx._cancel()
                elif kind == "soft":
                    ctx._soft_timeout()

    def serve(self) -> None:
        threading.Thread(target=self.read, name="taskyard-child-reader", daemon=True).start()
        self.send(("ready", os.getpid()))
        while (message := self._jobs.get()) is not None:
            _, job_id, module, qualname, payload, assignment, level = message
            outcome = self.run(job_id, module, qualname, payload, assignment, level)
            self.send(("done", job_id, *outcome))
            self._ctx = None

    def run(
        self,
        job_id: str,
        module: str,
        qualname: str,
        payload: Any,
        assignment: worker_service_pb2.Assignment,
        log_level: int,
    ) -> tuple[bool, Any]:
        """(True, JSON result) or (False, the serialized `Failure` the worker reports)."""

        def report(task_id: str, progress: task_pb2.Progress) -> None:
            self.send(("progress", job_id, progress.SerializeToString()))

        def log(when: float, level: int, message: str) -> None:
            self.send(("log", job_id, when, level, message))

        ctx = TaskContext(assignment, report, log_sink=log, log_level=log_level, detached=True)
        self._job_id, self._ctx = job_id, ctx
        try:
            defn = definition(module, qualname)
            kwargs = defn.signature.decode(payload)
            if defn.signature.context is not None:
                kwargs[defn.signature.context] = ctx
            value = defn.fn(**kwargs)
            if asyncio.iscoroutine(value):
                value = asyncio.run(value)
            return True, defn.returns.encode(value)
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt):
                raise
            return False, failure_of(exc).SerializeToString()


def main(conn: Connection) -> None:
    """The child's entry point (a multiprocessing target)."""
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Child(conn).serve()
