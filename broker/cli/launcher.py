"""`taskyard dev`'s supervisor: a broker and workers as child processes, one terminal.

The broker starts first; workers start once the broker answers a gRPC health
check, so nobody sees "connection refused". The children log JSON lines,
which are read here and shown as short human lines: startup chatter (the
banner sums it up) is dropped, warnings always pass. Ctrl-C (SIGINT), SIGTERM
or SIGHUP stop the workers first — they drain — then the broker, and the
launcher exits 0; a second Ctrl-C kills them at once.

Children run in their own process group, so the terminal's Ctrl-C reaches only
the launcher, which then stops them in order; on Linux they also get SIGTERM
if the launcher itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LISTENING = re.compile(r"listening on [^\s:]+:(\d+)")
HTTP_URL = re.compile(r"HTTP/JSON API at (https?://\S+)")
CONNECTED = re.compile(r"^connected to \S+ as (\S+) ")
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
START_TIMEOUT_S = 120.0


class LaunchError(Exception):
    """The broker or a worker did not come up, or died; the message says which and why."""


class StopRequested(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived."""


@dataclass(eq=False)
class Child:
    """One child process whose JSON log lines are rendered for people."""

    name: str
    argv: Sequence[str]
    out: TextIO
    level: int
    proc: asyncio.subprocess.Process | None = None
    announced: bool = False  # startup is over: INFO lines are shown from now on
    port: asyncio.Future[int] | None = None
    connected: asyncio.Future[str] | None = None  # a worker's id, once it is connected
    http_url: str | None = None  # the broker's HTTP API, announced before its gRPC port
    _pump: asyncio.Task[None] | None = None
    _exited: asyncio.Task[int] | None = None
    env: Mapping[str, str] | None = None  # added to this process's environment (secrets)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.port, self.connected = loop.create_future(), loop.create_future()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=None if self.env is None else {**os.environ, **self.env},
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        self._pump = asyncio.create_task(self._read(), name=f"{self.name}-log")
        self._exited = asyncio.create_task(self._wait(), name=f"{self.name}-exit")

    @property
    def exited(self) -> asyncio.Task[int]:
        assert self._exited is not None
        return self._exited

    async def _wait(self) -> int:
        assert self.proc is not None and self._pump is not None
        code = await self.proc.wait()
        await self._pump  # every line it wrote is shown before anyone reacts to its exit
        return code

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self._line(line.decode(errors="replace").rstrip("\n"))

    def _line(self, text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "message" not in record:
            self._show(text)  # not a log record: a crash, a C-level message; always shown
            return
        message = str(record["message"])
        self._notice(message)
        level = LEVELS.get(str(record.get("level")), 20)
        if level >= max(self.level, 30) or (self.announced and level >= self.level):
            self._show(render(self.name, record))

    def _notice(self, message: str) -> None:
        if match := HTTP_URL.search(message):
            self.http_url = match.group(1)
        if (match := LISTENING.search(message)) and self.port and not self.port.done():
            self.port.set_result(int(match.group(1)))
        if (match := CONNECTED.search(message)) and self.connected and not self.connected.done():
            self.connected.set_result(match.group(1))

    def _show(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def render(name: str, record: dict[str, Any]) -> str:
    """`12:03:04 broker  message [field=value …]`, with the level when it is not INFO."""
    stamp = str(record.get("time", ""))
    with contextlib.suppress(ValueError):
        stamp = datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
    level = str(record.get("level", "INFO"))
    extra = {
        k: v
        for k, v in record.items()
        if k not in {"time", "level", "logger", "message", "exception", "stack"}
    }
    line = f"{stamp} {name:<7} {'' if level == 'INFO' else level + ' '}{record['message']}"
    if extra:
        line += " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]"
    for key in ("exception", "stack"):
        if record.get(key):
            line += "\n" + str(record[key])
    return line


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the launcher dies, even by SIGKILL."""
    if sys.platform != "linux":
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def healthy(target: str, timeout: float) -> None:
    """Wait until the broker answers Health/Check with SERVING (gRPC, not a sleep)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=timeout
        )
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise LaunchError(f"the broker at {target} answers its health check with NOT_SERVING")


@contextlib.contextmanager
def own_terminal() -> Iterator[None]:
    """Be the terminal's foreground process group while running, then hand it back.

    Ctrl-C signals the whole foreground group. Under `make run` that includes
    make, which would then die of SIGINT however cleanly we stop: moving into
    a group of our own makes Ctrl-C ours alone, and make sees us exit 0. A
    no-op without a controlling terminal (tests, CI, pipes).
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield
        return
    try:
        original = os.tcgetpgrp(fd)
        if original != os.getpgrp() or os.getsid(0) == os.getpid():
            yield  # not in the foreground, or a session leader: leave things be
            return
        os.setpgid(0, 0)
        _set_foreground(fd, os.getpgrp())
        try:
            yield
        finally:
            _set_foreground(fd, original)
    finally:
        os.close(fd)


def _set_foreground(fd: int, group: int) -> None:
    # A background group calling tcsetpgrp gets SIGTTOU unless it blocks it.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, group)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass
class Stopper:
    """Ctrl-C, SIGTERM and SIGHUP ask for a stop; a second Ctrl-C asks for a kill."""

    requested: asyncio.Event = field(default_factory=asyncio.Event)
    forced: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        (self.forced if self.requested.is_set() else self.requested).set()


async def first(
    wanted: Awaitable[Any],
    children: Sequence[Child],
    stopper: Stopper,
    what: str,
    *,
    timeout: float | None = START_TIMEOUT_S,
) -> Any:
    """`wanted`'s result, unless a child exits, a stop is asked or `timeout` passes first."""
    goal = asyncio.ensure_future(wanted)
    stop = asyncio.create_task(stopper.requested.wait())
    watched = {c.exited: c for c in children}
    try:
        done, _ = await asyncio.wait(
            [goal, stop, *watched], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.cancel()
    if goal in done:
        return goal.result()
    goal.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await goal
    if stop in done:
        raise StopRequested
    for task in done:
        if task in watched:
            child = watched[task]
            raise LaunchError(f"the {child.name} exited with status {task.result()} {what}")
    raise LaunchError(f"gave up after {START_TIMEOUT_S:.0f}s {what}")


async def shut_down(workers: Sequence[Child], broker: Child | None, stopper: Stopper) -> bool:
    """Workers first (they drain), then the broker; True if all exited cleanly."""
    clean = True
    for group in ([*workers], [broker] if broker else []):
        for child in group:
            child.signal(signal.SIGTERM)
        for child in group:
            if child.proc is None:
                continue
            kill = asyncio.create_task(stopper.forced.wait())
            done, _ = await asyncio.wait([child.exited, kill], return_when=asyncio.FIRST_COMPLETED)
            kill.cancel()
            if child.exited not in done:
                for other in [*workers, *([broker] if broker else [])]:
                    other.signal(signal.SIGKILL)
                await child.exited
            clean = clean and child.exited.result() == 0
    return clean


async def supervise(
    broker: Child,
    workers: Sequence[Child],
    *,
    listen: str,
    on_ready: Callable[[str, list[str]], Awaitable[None]],
    stopper: Stopper,
) -> int:
    """Run until a stop is asked (exit 0) or a child fails (exit 1)."""
    started: list[Child] = []
    try:
        await broker.start()
        assert broker.port is not None
        port = await first(broker.port, [broker], stopper, "before it listened")
        target = f"{client_host(listen)}:{port}"
        await first(healthy(target, START_TIMEOUT_S), [broker], stopper, "before it was healthy")
        for worker in workers:
            worker.argv = [*worker.argv, "--target", target]
            await worker.start()
            started.append(worker)
        ids = []
        for worker in started:
            assert worker.connected is not None
            ids.append(
                await first(worker.connected, [broker, *started], stopper, "before it connected")
            )
        await on_ready(target, ids)
        for child in (broker, *started):
            child.announced = True
        # Running: no time limit, only a stop or a child's exit ends this.
        forever = asyncio.Event().wait()
        await first(forever, [broker, *started], stopper, "while running", timeout=None)
    except StopRequested:
        print("stopping (Ctrl-C again to kill at once)…", file=sys.stderr, flush=True)
        clean = await shut_down(started, broker, stopper)
        print("stopped", file=sys.stderr, flush=True)
        return 0 if clean else 1
    except LaunchError as exc:
        await shut_down(started, broker if broker.proc else None, stopper)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0  # pragma: no cover - `first` above only ends by raising


def client_host(listen: str) -> str:
    """Where a client on this machine reaches a broker listening on `listen`."""
    host = listen.rsplit(":", 1)[0]
    return "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::", "localhost") else host


def child_argv(*args: str) -> list[str]:
    """`taskyard ARGS…` with this interpreter, as a child of the launcher."""
    return [sys.executable, "-m", "broker", *args]


def level_number(name: str) -> int:
    return LEVELS[name.upper()]


def activate_command() -> str | None:
    """`source .venv/bin/activate` for the virtualenv this runs from, if it is one.

    Printed even when this shell has it on PATH: the banner speaks to the
    *other* terminal, where the commands are typed.
    """
    activate = os.path.join(os.path.dirname(sys.executable), "activate")
    if not os.path.exists(activate):
        return None
    relative = os.path.relpath(activate)
    return f"source {activate if relative.startswith('..') else relative}"
