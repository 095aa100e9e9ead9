"""The worker's process pool, for typed tasks defined with ``executor="process"``.

Not `concurrent.futures.ProcessPoolExecutor`, because a task queue needs what it lacks: a
child that dies (a segfault, ``os._exit``, the OOM killer) fails only its own task, and is
replaced, where the executor breaks the whole pool; a running task can be stopped (cancel,
lease lost, timeout) by killing its child; a child is replaced after `max_tasks_per_child`
tasks or once it holds more than `max_memory_per_child` bytes; and progress and log records
flow back while the task runs (see `_child` for the other end of the pipe).

Children start from a fork server on Linux (``forkserver``: they fork from a clean process
that has imported the task modules, never from the worker with its gRPC threads), and are
started when the worker starts, so the first task does not wait for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from taskyard.v1 import task_pb2, worker_service_pb2
from worker_sdk import _child
from worker_sdk._errors import MemoryLimitExceeded, ProcessTaskError, WorkerProcessCrashed

log = logging.getLogger("taskyard.worker")

MEMORY_CHECK_S = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcessPool:
    """Settings of a worker's process pool (tasks defined with ``executor="process"``).

    Args:
        size: How many child processes; default: the machine's CPU count.
        max_tasks_per_child: A child runs at most this many tasks, then is replaced
            (a cure for leaks in libraries). None: no limit.
        max_memory_per_child: Resident bytes a child may hold. Checked every 0.2 s while a
            task runs and after it: a child over the limit during a task is killed and the
            task fails with ``MemoryLimitExceeded`` (retried per its policy); over it after
            a task, the child is replaced and the result stands. Linux only (/proc).
        cancel_grace: Seconds a cancelled task's handler gets to return by itself (it sees
            ``ctx.cancelled``) before its child is killed.
        start_method: ``forkserver`` (the default on Linux) or ``spawn``.
    """

    size: int | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    cancel_grace: float = 0.5
    start_method: str | None = None


@dataclass(eq=False)
class _Job:
    key: str
    future: asyncio.Future[Any]
    on_progress: Callable[[task_pb2.Progress], None]
    on_log: Callable[[float, int, str], None]
    kill_timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Proc:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    tasks_run: int = 0
    job: _Job | None = None
    retiring: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)


def resident_bytes(pid: int) -> int | None:
    """A process's resident set size, from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Pool:
    """Child processes that run one task at a time each."""

    def __init__(self, settings: ProcessPool, *, preload: Sequence[str] = ()) -> None:
        self._settings = settings
        self._size = settings.size or os.cpu_count() or 1
        method = settings.start_method or ("forkserver" if sys.platform == "linux" else "spawn")
        self._mp: Any = multiprocessing.get_context(method)  # typeshed: BaseContext, no Process
        if method == "forkserver":
            self._mp.set_forkserver_preload(["worker_sdk._child", *preload])
        self._procs: set[_Proc] = set()
        self._idle: deque[_Proc] = deque()
        self._waiters: deque[asyncio.Future[_Proc]] = deque()
        self._jobs: dict[str, _Proc] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._closing = False
        self._memory_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def size(self) -> int:
        return self._size

    async def start(self) -> None:
        """Start every child; returns once they are ready for tasks."""
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._start_one() for _ in range(self._size)))

    async def _start_one(self) -> None:
        assert self._loop is not None
        parent, child = self._mp.Pipe(duplex=True)
        process = self._mp.Process(target=_child.main, args=(child,), daemon=True)
        # Process.start() blocks while the fork server starts (the first time) or forks.
        await asyncio.to_thread(process.start)
        child.close()
        proc = _Proc(process, parent)
        if self._closing:
            self._kill(proc)
            await asyncio.to_thread(process.join, 5)
            return
        self._procs.add(proc)
        self._loop.add_reader(parent.fileno(), self._readable, proc)
        self._loop.add_reader(process.sentinel, self._exited, proc)

    def _replace(self) -> None:
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._start_one(), name="taskyard-child")
        self._starting.add(task)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not start a process-pool child: %s", task.exception())

    # --- Running tasks ------------------------------------------------------------------------

    async def run(
        self,
        key: str,
        target: tuple[str, str],
        payload: Any,
        assignment: worker_service_pb2.Assignment,
        *,
        log_level: int,
        on_progress: Callable[[task_pb2.Progress], None],
        on_log: Callable[[float, int, str], None],
    ) -> Any:
        """Run the definition `target` (module, qualname) in a child; its JSON result.

        Raises:
            ProcessTaskError: the handler raised (its Failure, retry delay included).
            WorkerProcessCrashed: the child died while it ran the task.
            MemoryLimitExceeded: the child passed max_memory_per_child meanwhile.
            asyncio.CancelledError: the task was stopped (`cancel`, `abandon`).
        """
        proc = await self._acquire()
        loop = asyncio.get_running_loop()
        job = _Job(key, loop.create_future(), on_progress, on_log)
        proc.job = job
        self._jobs[key] = proc
        proc.conn.send(("run", key, *target, payload, assignment, log_level))
        self._watch_memory()
        try:
            return await job.future
        except asyncio.CancelledError:
            if not job.future.done():  # our caller was cancelled: the child must stop too
                self._kill_job(proc, None)
            raise

    async def _acquire(self) -> _Proc:
        while self._idle:
            proc = self._idle.popleft()
            if proc in self._procs and not proc.retiring:
                return proc
        waiter: asyncio.Future[_Proc] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _available(self, proc: _Proc) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(proc)
                return
        self._idle.append(proc)

    def cancel(self, key: str) -> None:
        """Ask the task to stop (``ctx.cancelled``); kill its child after the grace period."""
        proc = self._jobs.get(key)
        if proc is None or proc.job is None or proc.job.kill_timer is not None:
            return
        with contextlib.suppress(OSError):
            proc.conn.send(("cancel", key))
        assert self._loop is not None
        job = proc.job
        job.kill_timer = self._loop.call_later(
            self._settings.cancel_grace, self._kill_job, proc, None, job
        )

    def soft(self, key: str) -> None:
        """Tell the task that its soft deadline passed."""
        proc = self._jobs.get(key)
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.conn.send(("soft", key))

    def abandon(self, key: str) -> None:
        """Stop the task at once (its lease is gone): kill its child."""
        proc = self._jobs.get(key)
        if proc is not None:
            self._kill_job(proc, None)

    def _kill_job(self, proc: _Proc, error: BaseException | None, only: _Job | None = None) -> None:
        """Kill `proc`; its task ends with `error`, or as cancelled when None."""
        job = proc.job
        if job is None or (only is not None and job is not only):
            return
        self._settle(proc, job)
        if error is None:
            job.future.cancel()
        else:
            job.future.set_exception(error)
        self._kill(proc)

    def _settle(self, proc: _Proc, job: _Job) -> None:
        proc.job = None
        self._jobs.pop(job.key, None)
        if job.kill_timer is not None:
            job.kill_timer.cancel()

    def _kill(self, proc: _Proc) -> None:
        proc.retiring = True
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(proc.process.pid, signal.SIGKILL)  # type: ignore[arg-type]

    # --- Messages from children ---------------------------------------------------------------

    def _readable(self, proc: _Proc) -> None:
        try:
            while proc.conn.poll():
                self._message(proc, proc.conn.recv())
        except (EOFError, OSError):
            # The child is going; its sentinel says when it is gone, with its exit status.
            assert self._loop is not None
            self._loop.remove_reader(proc.conn.fileno())

    def _message(self, proc: _Proc, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            proc.ready = True
            self._available(proc)
            return
        job = proc.job
        if job is None or message[1] != job.key:
            return  # from a task that was stopped meanwhile
        if kind == "progress":
            job.on_progress(task_pb2.Progress.FromString(message[2]))
        elif kind == "log":
            job.on_log(*message[2:])
        elif kind == "done":
            self._done(proc, job, message[2], message[3])

    def _done(self, proc: _Proc, job: _Job, ok: bool, value: Any) -> None:
        self._settle(proc, job)
        proc.tasks_run += 1
        if not job.future.done():
            if ok:
                job.future.set_result(value)
            else:
                failure = worker_service_pb2.Failure.FromString(value)
                job.future.set_exception(ProcessTaskError(failure))
        limit = self._settings.max_tasks_per_child
        if limit is not None and proc.tasks_run >= limit:
            self._retire(proc, f"it ran {proc.tasks_run} tasks (max_tasks_per_child)")
        elif self._over_memory(proc):
            self._retire(proc, "it holds more than max_memory_per_child")
        else:
            self._available(proc)

    def _retire(self, proc: _Proc, why: str) -> None:
        log.info("replacing process-pool child %s: %s", proc.process.pid, why)
        proc.retiring = True
        with contextlib.suppress(OSError):
            proc.conn.send(("exit",))

    def _exited(self, proc: _Proc) -> None:
        if proc not in self._procs:
            return
        self._procs.discard(proc)
        assert self._loop is not None
        self._loop.remove_reader(proc.conn.fileno())
        self._loop.remove_reader(proc.process.sentinel)
        proc.process.join(1)  # the sentinel fired: it has exited, this reaps it
        code = proc.process.exitcode
        proc.conn.close()
        job = proc.job
        if job is not None:
            self._settle(proc, job)
            if not job.future.done():
                job.future.set_exception(
                    WorkerProcessCrashed(
                        f"the process running the task {_describe_exit(code)} "
                        f"(pid {proc.process.pid})"
                    )
                )
        elif not proc.retiring and not self._closing:
            log.warning("process-pool child %s %s", proc.process.pid, _describe_exit(code))
        proc.process.close()
        proc.gone.set()
        self._replace()

    # --- Memory ---------------------------------------------------------------------------------

    def _over_memory(self, proc: _Proc) -> bool:
        limit = self._settings.max_memory_per_child
        if limit is None or proc.process.pid is None:
            return False
        rss = resident_bytes(proc.process.pid)
        return rss is not None and rss > limit

    def _watch_memory(self) -> None:
        if self._settings.max_memory_per_child is None or self._memory_timer is not None:
            return
        assert self._loop is not None
        self._memory_timer = self._loop.call_later(MEMORY_CHECK_S, self._check_memory)

    def _check_memory(self) -> None:
        self._memory_timer = None
        limit = self._settings.max_memory_per_child
        for proc in list(self._jobs.values()):
            if self._over_memory(proc):
                error = MemoryLimitExceeded(
                    f"the process running the task passed max_memory_per_child ({limit} bytes) "
                    "and was killed"
                )
                self._kill_job(proc, error)
        if self._jobs:
            self._watch_memory()

    # --- Shutting down --------------------------------------------------------------------------

    async def close(self) -> None:
        """Kill every child (running tasks end as cancelled); wait until they are gone."""
        self._closing = True
        if self._memory_timer is not None:
            self._memory_timer.cancel()
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        for waiter in self._waiters:
            waiter.cancel()
        procs = list(self._procs)
        for proc in procs:
            if proc.job is not None:
                self._kill_job(proc, None)
            else:
                self._kill(proc)
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.gone.wait(), 5)
