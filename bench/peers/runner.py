"""One measurement of one system: the drain, the CPU pass and the latency pass.

* drain: a fresh instance, N tasks submitted (the system's bulk way), then the two worker
  processes started; process rate = N / (last completion - first handler start).
* cpu: a fresh instance, workers started, warmed up (until both processes have run a task)
  and idle; N tasks submitted while they run. The CPU every part used from the submission
  to the last completion, per task; also N / (last completion - first submission).
* latency: the same idle workers; 20 tasks to warm the path, then M submitted one call at a
  time at R per second: submit -> handler start, and the submit call itself.

"Last completion" is the system's own record where it keeps one (Taskyard: `finished_at`;
procrastinate: its `succeeded` event), else the handler's return (the Redis queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio

from bench.peers.probes import PgBackends
from bench.peers.systems import Env, Session, Spec, redis_pid
from bench.percentile import rank
from bench.proc import cpu_seconds, tree_cpu

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    tasks: int
    latency_tasks: int
    rate: float
    redis_url: str
    pg_dsn: str
    workdir: Path


class ClientProcess:
    """`python -m bench.peers.client APP`, one JSON command and answer at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    async def start(cls, session: Session) -> ClientProcess:
        log = (session.workdir / "client.log").open("a")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m", "bench.peers.client", session.spec.app,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            env=session.process_env(), cwd=ROOT,
        )  # fmt: skip
        return cls(proc)

    async def call(self, **command: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((json.dumps(command) + "\n").encode())
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client exited ({await self._proc.wait()}); see client.log")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(b'{"cmd": "quit"}\n')
        await self._proc.stdin.drain()
        async with asyncio.timeout(30):
            await self._proc.wait()


class Observer:
    """Reads what the handlers wrote: start stamps (Redis) and completion counts (files)."""

    def __init__(self, env: Env) -> None:
        self._env = env
        self._redis = redis.asyncio.Redis.from_url(env.redis_url)

    async def starts(self, tag: str) -> list[tuple[int, float, int]]:
        """(seq, handler start, pid) for each task of a phase."""
        raw = await self._redis.lrange(f"{self._env.prefix}:stamps:{tag}", 0, -1)
        rows = [item.decode().split() for item in raw]
        return [(int(seq), float(at), int(pid)) for seq, at, pid in rows]

    def done(self, tag: str) -> tuple[int, float]:
        count, last = 0, 0.0
        for path in self._env.done_dir.glob("*.json"):
            entry = json.loads(path.read_text()).get(tag)
            if entry:
                count += int(entry[0])
                last = max(last, float(entry[1]))
        return count, last

    async def wait_done(self, tag: str, n: int, session: Session, db_target: int) -> float:
        """Wait until n tasks of `tag` finished; the last completion's time."""
        deadline = time.monotonic() + max(120.0, n / 20)
        while (done := self.done(tag))[0] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{session.spec.key}: {done[0]} of {n} {tag} tasks finished")
            await asyncio.sleep(0.02)
        while (recorded := await session.database_done()) is not None:
            if recorded[0] >= db_target:
                return recorded[1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{session.spec.key}: the database shows {recorded[0]} done")
            await asyncio.sleep(0.02)
        return done[1]

    async def cleanup(self) -> None:
        """Delete every Redis key of the session (they all contain its prefix)."""
        keys = [k async for k in self._redis.scan_iter(match=f"*{self._env.prefix}*")]
        for i in range(0, len(keys), 500):
            await self._redis.delete(*keys[i : i + 500])
        await self._redis.aclose()


def _new_session(spec: Spec, settings: Settings, name: str) -> Session:
    prefix = f"pb{uuid.uuid4().hex[:10]}"
    workdir = settings.workdir / f"{spec.key}-{name}-{prefix}"
    env = Env(redis_url=settings.redis_url, prefix=prefix, done_dir=workdir / "done")
    return Session(spec=spec, workdir=workdir, env=env, admin_dsn=settings.pg_dsn)


async def _recorded(session: Session) -> int:
    done = await session.database_done()
    return 0 if done is None else done[0]


@contextlib.asynccontextmanager
async def _instance(
    spec: Spec, settings: Settings, name: str
) -> AsyncIterator[tuple[Session, Observer, ClientProcess]]:
    """A fresh session, its observer and a client; on exit the workers stop before the
    session's Redis keys are deleted (a dramatiq worker writes heartbeats until it stops)."""
    session = _new_session(spec, settings, name)
    observer = Observer(session.env)
    try:
        async with session:
            client = await ClientProcess.start(session)
            try:
                yield session, observer, client
            finally:
                await client.close()
    finally:
        await observer.cleanup()


async def drain(spec: Spec, settings: Settings) -> dict[str, float]:
    n = settings.tasks
    async with _instance(spec, settings, "drain") as (session, observer, client):
        await client.call(cmd="bulk", tag="drain", n=n)
        await session.start_workers()
        last = await observer.wait_done("drain", n, session, n)
        starts = await observer.starts("drain")
    first: dict[int, float] = {}
    for _, at, pid in starts:
        first[pid] = min(at, first.get(pid, at))
    began = min(first.values())
    return {
        "process_per_s": n / (last - began),
        # While only one process has started, the drain runs at half speed: at a few
        # thousand tasks a second, a late second process weighs on the rate (JSON only).
        "drain_start_skew_ms": 1000 * (max(first.values()) - began),
        "drain_processes": len(first),  # worker processes that ran any of the drain
    }


async def _warm_up(session: Session, client: ClientProcess, observer: Observer) -> None:
    """Bursts of tasks until both worker processes have run one (their start-up is over)."""
    sent = 0
    for burst in (10, 20, 40, 80, 160, 320):
        await client.call(cmd="bulk", tag="warm", n=burst)
        sent += burst
        await observer.wait_done("warm", sent, session, sent)
        if len({pid for _, _, pid in await observer.starts("warm")}) >= 2:
            return
    raise RuntimeError(f"{session.spec.key}: only one worker process ran the warm-up tasks")


async def _settle(pids: list[int], timeout: float = 15.0) -> None:
    """Wait until the processes are idle: under 4% of a core over half a second."""
    deadline = time.monotonic() + timeout
    before = sum(tree_cpu(p) for p in pids)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = sum(tree_cpu(p) for p in pids)
        if now - before < 0.02:
            return
        before = now


class Meter:
    """CPU seconds per part between `start` and `stop`."""

    def __init__(self, session: Session, redis_server: int) -> None:
        self._session = session
        self._redis = redis_server
        self._pg = PgBackends(session.admin_dsn, session.database) if session.database else None

    def _read(self) -> dict[str, float]:
        return {
            "broker": sum(tree_cpu(p) for p in self._session.broker_pids()),
            "workers": sum(tree_cpu(p) for p in self._session.worker_pids()),
            "redis": cpu_seconds(self._redis),
        }

    async def start(self) -> None:
        if self._pg is not None:
            await self._pg.start()
        self._start = self._read()

    async def stop(self) -> dict[str, float]:
        end = self._read()
        used = {part: end[part] - self._start[part] for part in end}
        used["postgres"] = await self._pg.stop() if self._pg is not None else 0.0
        return used


async def live(spec: Spec, settings: Settings) -> dict[str, float]:
    """The CPU pass and the latency pass, on one instance with idle, warmed-up workers."""
    n = settings.tasks
    async with _instance(spec, settings, "live") as (session, observer, client):
        await session.start_workers()
        await _warm_up(session, client, observer)
        await _settle(session.worker_pids() + session.broker_pids())
        meter = Meter(session, await redis_pid(settings.redis_url))
        before = await _recorded(session)
        await meter.start()
        submitted = await client.call(cmd="bulk", tag="cpu", n=n)
        last = await observer.wait_done("cpu", n, session, before + n)
        used = await meter.stop()
        used["client"] = submitted["cpu_s"]
        result = {f"cpu_{part}_us": 1e6 * seconds / n for part, seconds in used.items()}
        result["cpu_total_us"] = sum(result.values())
        result["e2e_per_s"] = n / (last - submitted["began"])
        result |= await _latency(session, client, observer, settings)
    return result


async def _latency(
    session: Session, client: ClientProcess, observer: Observer, settings: Settings
) -> dict[str, float]:
    before = await _recorded(session)
    await client.call(cmd="paced", tag="lwarm", n=20, rate=settings.rate)
    await observer.wait_done("lwarm", 20, session, before + 20)
    m = settings.latency_tasks
    sent = (await client.call(cmd="paced", tag="lat", n=m, rate=settings.rate))["sent"]
    await observer.wait_done("lat", m, session, before + 20 + m)
    started = {seq: at for seq, at, _ in await observer.starts("lat")}
    waits = sorted((started[int(seq)] - at) * 1000 for seq, at, _ in sent)
    calls = sorted(call * 1000 for _, _, call in sent)
    return {
        "start_p50_ms": statistics.median(waits),
        "start_p99_ms": rank(waits, 0.99),
        "submit_call_p50_ms": statistics.median(calls),
        "submit_call_p99_ms": rank(calls, 0.99),
    }


async def measure(spec: Spec, settings: Settings) -> dict[str, float]:
    return await drain(spec, settings) | await live(spec, settings)
