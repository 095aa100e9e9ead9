"""Real processes for tests: a broker on a random port and worker subprocesses.

Readiness is an event, not a sleep: the broker's log line announcing its port,
a worker's log line announcing its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from taskyard.v1 import task_service_pb2_grpc, worker_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"listening on [^:]+:(\d+)")
HTTP_READY = re.compile(r"HTTP/JSON API at https?://[^:]+:(\d+)/")
START_TIMEOUT_S = 30.0


@dataclass(eq=False)
class LoggedProcess:
    """A subprocess whose stderr is copied to a log file and scanned for patterns."""

    proc: asyncio.subprocess.Process
    log_path: Path
    _lines: list[str] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _pump: asyncio.Task[None] | None = None
    _eof: bool = False
    outlives_test: bool = False  # set by module-scoped fixtures; kill_leftovers spares it
    loop: asyncio.AbstractEventLoop | None = None  # the event loop that started it

    @classmethod
    async def start(
        cls, args: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path = ROOT
    ) -> LoggedProcess:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self = cls(proc, log_path, loop=asyncio.get_running_loop())
        self._pump = asyncio.create_task(self._copy())
        _started.append(self)
        return self

    async def _copy(self) -> None:
        assert self.proc.stderr is not None
        with self.log_path.open("a") as log:
            while line := await self.proc.stderr.readline():
                text = line.decode(errors="replace")
                log.write(text)
                log.flush()
                async with self._changed:
                    self._lines.append(text)
                    self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    async def wait_for_line(
        self, pattern: re.Pattern[str] | str, *, after: int = 0, timeout: float = START_TIMEOUT_S
    ) -> re.Match[str]:
        """Wait until a log line (the `after`-th or later) matches."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> re.Match[str] | None:
            for line in self._lines[after:]:
                if match := regex.search(line):
                    return match
            return None

        async with asyncio.timeout(timeout), self._changed:
            while (match := found()) is None:
                if self._eof:
                    code = await self.proc.wait()
                    raise RuntimeError(f"process exited ({code}); see {self.log_path}")
                await self._changed.wait()
        return match

    @property
    def line_count(self) -> int:
        return len(self._lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
        if self._pump is not None:
            await self._pump
        return code

    async def kill(self) -> None:
        await self.signal(signal.SIGKILL)
        await self.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.returncode is not None:
            return self.proc.returncode
        await self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            await self.kill()
            raise


_started: list[LoggedProcess] = []


async def reap_leftovers() -> int:
    """In the test's own event loop: SIGKILL what the test left running, and wait for it.

    A test that fails before stopping its workers must not leave them to the next
    test: a worker that keeps reconnecting skews it, and a process, pipe or
    transport collected later warns there ("subprocess … is still running",
    "Event loop is closed") and fails it under `filterwarnings = error`. Waiting
    here, while the loop still runs, reaps each process, ends its log pump and
    closes its transport. Processes of another loop (a module-scoped fixture's)
    are left to `kill_leftovers`.
    """
    loop = asyncio.get_running_loop()
    killed = 0
    for process in list(_started):
        if process.loop is not loop:
            continue
        if process.outlives_test and process.proc.returncode is None:
            continue
        _started.remove(process)
        if process.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
                killed += 1
        with contextlib.suppress(TimeoutError):
            await process.wait(timeout=10)
    return killed


def kill_leftovers() -> int:
    """SIGKILL every process a test started and left running (say, after a failed assert).

    The fallback for processes `reap_leftovers` could not wait for (another event
    loop's): a leftover worker would keep reconnecting and skew later tests and
    benchmarks.
    """
    killed = 0
    for process in list(_started):
        if process.outlives_test and process.proc.returncode is None:
            continue
        _started.remove(process)
        if process.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
                killed += 1
    return killed


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(eq=False)
class Broker:
    """A real broker process."""

    db_url: str
    workdir: Path
    extra_args: Sequence[str] = ()
    process: LoggedProcess | None = None
    port: int = 0
    starts: int = 0
    http_port: int = 0  # with --http-listen among extra_args

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start (or restart, on the same port) and wait until it serves."""
        self.starts += 1
        args = [
            sys.executable, "-m", "broker", "broker",
            "--listen", f"127.0.0.1:{self.port}",
            "--db", self.db_url,
            *self.extra_args,
        ]  # fmt: skip
        log_path = self.workdir / "broker.log"
        self.process = await LoggedProcess.start(args, log_path, python_env())
        match = await self.process.wait_for_line(READY)
        self.port = int(match.group(1))
        if "--http-listen" in self.extra_args:
            # Announced before the gRPC line: already read.
            http = await self.process.wait_for_line(HTTP_READY, timeout=1)
            self.http_port = int(http.group(1))

    async def stop(self) -> int:
        assert self.process is not None
        return await self.process.stop()

    async def kill(self) -> None:
        assert self.process is not None
        await self.process.kill()

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.target)


@dataclass(eq=False)
class WorkerProcess:
    process: LoggedProcess
    worker_id: str

    async def connected(self, *, after: int = 0) -> None:
        await self.process.wait_for_line("connected to", after=after)

    async def stop(self) -> int:
        return await self.process.stop()

    async def kill(self) -> None:
        await self.process.kill()


async def start_worker(
    broker: Broker,
    workdir: Path,
    *,
    name: str,
    concurrency: int = 4,
    app: str = "tests.workers:worker",
    env: dict[str, str] | None = None,
    queues: str | None = None,
    wait_connected: bool = True,
    targets: str | None = None,
) -> WorkerProcess:
    """Start `taskyard worker APP`; `targets` (comma-separated) overrides the broker's address."""
    args = [
        sys.executable, "-m", "broker", "worker", app,
        "--target", targets or broker.target,
        "--concurrency", str(concurrency),
        "--worker-id", name,
    ]  # fmt: skip
    if queues:
        args += ["--queues", queues]
    extra = {"TASKYARD_TEST_RECORD": str(workdir / "record.log"), **(env or {})}
    process = await LoggedProcess.start(args, workdir / f"{name}.log", python_env(extra))
    worker = WorkerProcess(process, name)
    if wait_connected:
        await worker.connected()
    return worker


def read_record(workdir: Path) -> list[list[str]]:
    """Lines the test workers appended: `<event> <task_id> <attempt> <worker pid> ...`."""
    path = workdir / "record.log"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


async def wait_for_record(
    workdir: Path, event: str, task_id: str, attempt: int, timeout: float = 30.0
) -> None:
    """Wait until a test worker recorded `event` for this attempt of the task.

    The record is a file another process appends to, so it is polled (with a deadline):
    a task the broker shows RUNNING may not have reached its handler yet.
    """
    wanted = [event, task_id, str(attempt)]
    async with asyncio.timeout(timeout):
        while True:
            if any(line[:3] == wanted for line in read_record(workdir)):
                return
            await asyncio.sleep(0.05)


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(channel)


@contextlib.asynccontextmanager
async def stubs(broker: Broker) -> AsyncIterator[Stubs]:
    async with broker.channel() as channel:
        yield Stubs(channel)


class TcpProxy:
    """A TCP relay between a worker and the broker whose connections a test can cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pairs |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._pairs -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> int:
        """Drop every relayed connection at once; returns how many there were."""
        pairs = list(self._pairs)
        for writer in pairs:
            writer.transport.abort()
        return len(pairs) // 2

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
