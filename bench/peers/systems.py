"""How each system is started, stopped and asked what it finished, for one session.

A session is a fresh instance of one system: its own SQLite file or scratch PostgreSQL
database, its own Redis key prefix, its broker (Taskyard) and its two worker processes.
`Spec` names a system as a row of the table; `Spec.session(...)` builds its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from broker.store.database import normalize_url
from tests.helpers import Broker, LoggedProcess, python_env, start_worker

Backend = Literal["sqlite", "postgresql", "redis"]


@dataclass(frozen=True)
class Spec:
    """One row of the comparison."""

    key: str
    label: str
    app: str  # module under bench.peers.apps
    backend: Backend
    durable: bool
    config: str  # the worker settings, as printed under the table
    concurrency: int = 0  # Taskyard and procrastinate: per worker process; dramatiq: threads


@dataclass
class Env:
    """What every process of one session is told (`PEERS_*`, read by bench/peers/handler.py)."""

    redis_url: str
    prefix: str  # also the queue's name/namespace on Redis: letters and digits only
    done_dir: Path
    dsn: str = ""  # PostgreSQL: the scratch database
    target: str = ""  # Taskyard: the broker

    def variables(self) -> dict[str, str]:
        return {
            "PEERS_REDIS_URL": self.redis_url,
            "PEERS_PREFIX": self.prefix,
            "PEERS_NAME": self.prefix,
            "PEERS_DONE_DIR": str(self.done_dir),
            "PEERS_DSN": self.dsn,
            "PEERS_TARGET": self.target,
        }


@dataclass
class Session:
    """A fresh instance of one system; `start_workers` starts its two worker processes."""

    spec: Spec
    workdir: Path
    env: Env
    admin_dsn: str
    database: str = ""  # the scratch PostgreSQL database, if any
    broker: Broker | None = None
    workers: list[LoggedProcess] = field(default_factory=list)

    async def __aenter__(self) -> Session:
        self.workdir.mkdir(parents=True)
        self.env.done_dir.mkdir()
        try:
            await self._prepare()
        except BaseException:
            await self.__aexit__()  # drop the scratch database, stop the broker
            raise
        return self

    async def _prepare(self) -> None:
        if self.spec.backend == "postgresql":
            self.database = self.env.prefix
            await _admin(self.admin_dsn, f'CREATE DATABASE "{self.database}"')
            self.env.dsn = _with_database(self.admin_dsn, self.database)
        if self.spec.app == "taskyard_app":
            db = self.env.dsn or f"sqlite+aiosqlite:///{self.workdir / 'taskyard.db'}"
            # As in `make bench`: the per-identity submission limit would cap the client.
            self.broker = Broker(db_url=db, workdir=self.workdir, extra_args=("--submit-rate", "0"))
            await self.broker.start()
            self.env.target = self.broker.target
        if self.spec.app == "procrastinate_app":
            await self._run(["-m", "procrastinate", "--app", _PROCRASTINATE, "schema", "--apply"])

    async def _run(self, args: list[str]) -> None:
        proc = await LoggedProcess.start(
            [sys.executable, *args], self.workdir / "setup.log", self.process_env()
        )
        if await proc.wait(120) != 0:
            raise RuntimeError(f"{args} failed; see {self.workdir / 'setup.log'}")

    def process_env(self) -> dict[str, str]:
        return python_env(self.env.variables())

    async def start_workers(self) -> None:
        """Two worker processes (for huey, dramatiq and Celery: one parent forking two)."""
        if self.broker is not None:
            # Started together, as `make bench` starts them: one after the other, the first
            # would drain a small backlog alone while the second is still importing.
            started = await asyncio.gather(
                *(
                    start_worker(
                        self.broker, self.workdir, name=f"w{i}", concurrency=self.spec.concurrency,
                        app="bench.peers.apps.taskyard_app:worker", env=self.env.variables(),
                    )
                    for i in range(2)
                )
            )  # fmt: skip
            self.workers = [w.process for w in started]
            return
        for i, args in enumerate(_worker_commands(self.spec)):
            self.workers.append(
                await LoggedProcess.start(
                    [sys.executable, *args], self.workdir / f"w{i}.log", self.process_env()
                )
            )

    async def stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(TimeoutError):
                await worker.stop(timeout=60)
            with contextlib.suppress(ProcessLookupError):  # pool children left behind
                os.killpg(worker.pid, signal.SIGKILL)
        self.workers = []

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def broker_pids(self) -> list[int]:
        return [self.broker.process.pid] if self.broker and self.broker.process else []

    async def database_done(self) -> tuple[int, float] | None:
        """Tasks the system itself recorded as succeeded, and the latest such time (epoch s).

        None for the Redis queues, which keep no record of a finished task: for them a
        task is done when its handler returns (bench/peers/handler.py counts that).
        """
        if self.spec.app == "taskyard_app":
            assert self.broker is not None
            query = "SELECT count(*), max(finished_at) / 1e6 FROM task WHERE state = 5"
            return await _fetch_done(self.broker.db_url, query)
        if self.spec.app == "procrastinate_app":
            query = (
                "SELECT count(*), extract(epoch FROM max(at)) FROM procrastinate_events "
                "WHERE type = 'succeeded'"
            )
            return await _fetch_done(self.env.dsn, query)
        return None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_workers()
        if self.broker is not None and self.broker.process is not None:
            await self.broker.stop()
        if self.database:
            await _admin(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


_PROCRASTINATE = "bench.peers.apps.procrastinate_app.app"


def _worker_commands(spec: Spec) -> list[list[str]]:
    """Each peer's own command line for two worker processes, logging at WARNING or less.

    Per-task log lines at INFO (huey, procrastinate) would be a cost Taskyard's worker
    does not pay, so every system runs quiet.
    """
    if spec.app == "huey_app":
        # One consumer, two worker processes (-k process -w 2); -q logs warnings only.
        return [["-m", "huey.bin.huey_consumer", "bench.peers.apps.huey_app.huey",
                 "-k", "process", "-w", "2", "-q"]]  # fmt: skip
    if spec.app == "dramatiq_app":
        return [["-m", "dramatiq", "bench.peers.apps.dramatiq_app",
                 "--processes", "2", "--threads", str(spec.concurrency)]]  # fmt: skip
    if spec.app == "celery_app":
        return [["-m", "celery", "-A", "bench.peers.apps.celery_app", "worker",
                 "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
                 "--without-heartbeat", "--without-gossip", "--without-mingle"]]  # fmt: skip
    if spec.app == "procrastinate_app":
        return [
            ["-m", "procrastinate", "--app", _PROCRASTINATE, "worker",
             "--concurrency", str(spec.concurrency), "--queues", "default", "--name", f"w{i}"]
            for i in range(2)
        ]  # fmt: skip
    raise ValueError(f"no worker command for {spec.app}")


def _with_database(dsn: str, database: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + database


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _fetch_done(url: str, query: str) -> tuple[int, float]:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            count, last = (await conn.execute(sa.text(query))).one()
    finally:
        await engine.dispose()
    return int(count), float(last or 0.0)


async def redis_pid(url: str) -> int:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return int(info["process_id"])
