"""`make bench`: throughput and latency of a real broker with real worker processes.

Each scenario runs several times on a fresh database and reports the median.

* submit: N tasks through BatchCreateTasks (1,000 per call, 4 calls in flight)
  with no worker connected: tasks acknowledged per second.
* process: the N queued tasks drained by W worker processes: N divided by the
  span from the first lease to the last completion (read from the database); with
  how much later the last worker's first lease came (process_start_skew_ms).
* end-to-end: workers connected, N tasks submitted as fast as possible: N
  divided by the span from the first submission to the last completion. The
  CPU time each part spent over that span, per task: the broker process, the
  worker processes and this (client) process, read from /proc and
  `time.process_time()` — what a task costs, independent of how busy the
  machine is. On PostgreSQL also the database's backends (e2e_database_cpu_us).
* round-trips (PostgreSQL, only when asked for): the process and end-to-end runs
  again with the brokers reaching the database through a relay that counts
  round trips and commits (bench/pg_wire.py): per 1,000 tasks and per commit,
  and tasks per commit.
* latency: idle workers, one CreateTask at a time at a fixed rate; the time from
  sending CreateTask to the handler starting (the handler returns time.time()).
* schedule: a once-per-second cron at real time; fire time to task creation and
  to handler start, p50 and p99 (bench/schedules.py).
* soak (only when asked for, once): --soak-tasks (1M) no-op tasks through the
  broker with a bounded backlog and a short retention; the broker's RSS after
  every --soak-step (100k) tasks, and whether it stays within 10% after
  --soak-settle (200k) (bench/soak.py).
* events: end-to-end throughput with no WatchEvents subscriber and with
  --subscribers (10) unfiltered ones; the difference in percent is what the
  event stream costs (bench/events.py).
* backlog (only when asked for): the process rate of the first --tasks tasks with
  --backlog (1M) waiting, against a queue holding only --tasks, and the broker's RSS
  with the backlog stored (bench/backlog.py).
* executors: 4 CPU-bound tasks (--cpu-seconds each) in a worker's process pool, then in
  its threads: first submission to last result (bench/executors.py).
* workflow: broker CPU per node of a fan-out/fan-in of --fan nodes against per
  plain task, and the per-hop latency of a chain of --chain nodes
  (bench/workflows.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.backlog import backlog_cost
from bench.events import subscriber_cost
from bench.executors import executor_spans
from bench.peers.probes import PgBackends
from bench.pg_wire import WireCounter, through, upstream
from bench.proc import cpu_seconds
from bench.schedules import schedule_lag
from bench.soak import soak
from bench.workflows import chain_hops, fan_cost, plain_cost
from broker.store.database import normalize_url
from tests.helpers import Broker, WorkerProcess, start_worker
from worker_sdk import Client, TaskSpec


@dataclass
class Args:
    db: str | None
    tasks: int
    workers: int
    runs: int
    rate: float
    latency_tasks: int
    concurrency: int
    json_out: str | None
    scenario: str
    replicas: int
    stats_tasks: int = 1_000_000
    soak_tasks: int = 1_000_000
    soak_step: int = 100_000
    soak_settle: int = 200_000
    soak_backlog: int = 20_000
    soak_retention: str = "60s"
    subscribers: int = 10
    cpu_seconds: float = 1.0
    fan: int = 10_000
    chain: int = 1_000
    backlog: int = 1_000_000


async def _wait_done(db_url: str, expected: int) -> tuple[int, int]:
    """Poll until `expected` tasks succeeded; return (min started_at, max finished_at) in µs."""
    _, first, last = await _done_at_least(db_url, expected)
    return first, last


async def _done_at_least(db_url: str, expected: int) -> tuple[int, int, int]:
    """Poll until at least `expected` tasks succeeded: (how many, first start, last finish).

    More may have finished by the poll when workers keep going (the backlog scenario)."""
    engine = create_async_engine(normalize_url(db_url))
    try:
        while True:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.text(
                            "SELECT count(*), min(started_at), max(finished_at) FROM task "
                            "WHERE state = 5"
                        )
                    )
                ).one()
            if row[0] >= expected:
                return int(row[0]), int(row[1]), int(row[2])
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def _submit(clients: list[Client], n: int, type_: str = "noop") -> None:
    """Submit n tasks in batches of 1,000, four in flight, spread over the replicas."""
    batches = [[TaskSpec(type_) for _ in range(min(1000, n - i))] for i in range(0, n, 1000)]
    semaphore = asyncio.Semaphore(4)

    async def one(index: int, batch: list[TaskSpec]) -> None:
        async with semaphore:
            await clients[index % len(clients)].submit_many(batch)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(batches)))


class Setup:
    def __init__(
        self,
        args: Args,
        workdir: Path,
        index: int,
        extra_args: tuple[str, ...] = (),
        broker_db: str | None = None,
    ) -> None:
        """`broker_db`: the brokers' URL when it is not the one the benchmark reads (a relay)."""
        self.args = args
        self.workdir = workdir / f"run{index}"
        self.workdir.mkdir()
        self.db_url = args.db or f"sqlite+aiosqlite:///{self.workdir / 'bench.db'}"
        self.brokers = []
        for r in range(args.replicas):
            (self.workdir / f"r{r}").mkdir()
            # The per-identity submission limit (10,000 tasks/s by default) would
            # cap the one load-generating client: the benchmark measures the broker.
            self.brokers.append(
                Broker(
                    db_url=broker_db or self.db_url,
                    workdir=self.workdir / f"r{r}",
                    extra_args=("--submit-rate", "0", *extra_args),
                )
            )
        self.broker = self.brokers[0]
        self.workers: list[WorkerProcess] = []

    async def __aenter__(self) -> Setup:
        if self.args.db:
            await _reset(self.args.db)
        await self.broker.start()  # the first migrates the schema
        await asyncio.gather(*(b.start() for b in self.brokers[1:]))
        return self

    @property
    def broker_pid(self) -> int:
        assert self.broker.process is not None
        return self.broker.process.pid

    def clients(self, timeout: float = 120) -> list[Client]:
        return [Client(b.target, timeout=timeout) for b in self.brokers]

    async def start_workers(self) -> None:
        self.workers = list(
            await asyncio.gather(
                *(
                    start_worker(
                        self.broker, self.workdir, name=f"bench{i}",
                        concurrency=self.args.concurrency, app="bench.workers:worker",
                        targets=self._targets(i),
                    )
                    for i in range(self.args.workers)
                )
            )
        )  # fmt: skip

    def _targets(self, i: int) -> str:
        """Worker i connects to replica i (mod N) first and fails over to the rest."""
        n = len(self.brokers)
        return ",".join(self.brokers[(i + k) % n].target for k in range(n))

    async def __aexit__(self, *exc: object) -> None:
        for w in self.workers:
            await w.stop()
        for b in self.brokers:
            await b.stop()


async def _reset(db_url: str) -> None:
    """Start each run on an empty PostgreSQL database: every table goes, whatever its revision."""
    engine = create_async_engine(normalize_url(db_url))
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


async def throughput(args: Args, workdir: Path, index: int) -> dict[str, float]:
    n = args.tasks
    async with Setup(args, workdir, index) as setup:
        clients = setup.clients()
        t0 = time.perf_counter()
        await _submit(clients, n)
        submit_rate = n / (time.perf_counter() - t0)
        await _close(clients)
        await setup.start_workers()
        first, last = await _wait_done(setup.db_url, n)
        process_rate = n / ((last - first) / 1e6)
        skew_ms = await _start_skew_ms(setup.db_url)
    async with Setup(args, workdir, index + 100) as setup:
        await setup.start_workers()
        clients = setup.clients()
        meter = CpuMeter(setup)
        await meter.start()
        t0 = time.time()
        await _submit(clients, n)
        _, last = await _wait_done(setup.db_url, n)
        e2e_rate = n / (last / 1e6 - t0)
        cpu = await meter.per_task_us(n)
        await _close(clients)
    return {
        "submit_per_s": submit_rate,
        "process_per_s": process_rate,
        "process_start_skew_ms": skew_ms,
        "e2e_per_s": e2e_rate,
        **cpu,
    }


async def round_trips(args: Args, workdir: Path, index: int) -> dict[str, float]:
    """Database round trips and commits per task, drained and end to end (PostgreSQL only).

    The brokers reach the database through `bench.pg_wire`'s relay, which counts; the
    relay's hop slows every round trip, so these runs give counts and no rates.
    """
    assert args.db is not None
    n = args.tasks
    relay = WireCounter(*upstream(normalize_url(args.db)))
    port = await relay.start()
    broker_db = through(normalize_url(args.db), port)
    tally = relay.tally
    try:
        async with Setup(args, workdir, index + 700, broker_db=broker_db) as setup:
            clients = setup.clients()
            await _submit(clients, n)
            await _close(clients)
            before = (tally.round_trips, tally.commits)
            await setup.start_workers()
            await _wait_done(setup.db_url, n)
            drained = (tally.round_trips - before[0], tally.commits - before[1])
        async with Setup(args, workdir, index + 800, broker_db=broker_db) as setup:
            await setup.start_workers()
            clients = setup.clients()
            before = (tally.round_trips, tally.commits)
            await _submit(clients, n)
            await _wait_done(setup.db_url, n)
            e2e = (tally.round_trips - before[0], tally.commits - before[1])
            await _close(clients)
    finally:
        await relay.close()
    figures: dict[str, float] = {}
    for name, (trips, commits) in (("process", drained), ("e2e", e2e)):
        figures[f"{name}_round_trips_per_1000_tasks"] = 1000 * trips / n
        figures[f"{name}_round_trips_per_commit"] = trips / max(commits, 1)
        figures[f"{name}_tasks_per_commit"] = n / max(commits, 1)
    return figures


async def _start_skew_ms(db_url: str) -> float:
    """How much later than the first the last worker leased its first task, in the drain.

    Until then fewer workers drain the queue: at ~10,000 tasks/s the whole drain lasts a
    second or two, so a worker still importing when the first starts lowers the rate.
    """
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.connect() as conn:
            firsts = (
                await conn.execute(sa.text("SELECT min(started_at) FROM task GROUP BY worker_id"))
            ).scalars()
            starts = [int(s) for s in firsts]
    finally:
        await engine.dispose()
    return (max(starts) - min(starts)) / 1000


class CpuMeter:
    """CPU seconds spent by the brokers, the workers and this process between start and stop.

    On PostgreSQL also the database's: its backends serving the benchmark's database
    (bench/peers/probes.py), which on SQLite is work inside the broker's process.
    """

    def __init__(self, setup: Setup) -> None:
        self._brokers = [b.process.pid for b in setup.brokers if b.process is not None]
        self._workers = [w.process.pid for w in setup.workers]
        self._database: PgBackends | None = None
        if setup.args.db and not setup.db_url.startswith("sqlite"):
            url = make_url(normalize_url(setup.db_url))
            admin = url.set(drivername="postgresql", database="postgres")
            self._database = PgBackends(
                admin.render_as_string(hide_password=False), url.database or ""
            )
        self._start = (0.0, 0.0, 0.0)

    async def start(self) -> None:
        if self._database is not None:
            await self._database.start()
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        return (
            sum(cpu_seconds(pid) for pid in self._brokers),
            sum(cpu_seconds(pid) for pid in self._workers),
            time.process_time(),
        )

    async def per_task_us(self, n: int) -> dict[str, float]:
        end = self._read()
        broker, workers, client = (1e6 * (e - s) / n for e, s in zip(end, self._start, strict=True))
        figures = {
            "e2e_broker_cpu_us": broker,
            "e2e_workers_cpu_us": workers,
            "e2e_client_cpu_us": client,
        }
        if self._database is not None:
            figures["e2e_database_cpu_us"] = 1e6 * await self._database.stop() / n
        return figures


async def _close(clients: list[Client]) -> None:
    for client in clients:
        await client.close()


async def latency(args: Args, workdir: Path, index: int) -> dict[str, float]:
    async with Setup(args, workdir, index + 200) as setup:
        await setup.start_workers()
        async with Client(setup.broker.target) as client:
            for _ in range(20):  # warm up connections and caches
                await client.wait((await client.submit("stamp")).id, timeout=10)
            sent: dict[str, float] = {}
            interval = 1.0 / args.rate
            next_at = time.perf_counter()
            for _ in range(args.latency_tasks):
                next_at += interval
                t = time.time()
                task = await client.submit("stamp")
                sent[task.id] = t
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            waits = [client.wait(task_id, timeout=30) for task_id in sent]
            started = await asyncio.gather(*waits)
    latencies = sorted(
        (s - sent_at) * 1000 for s, sent_at in zip(started, sent.values(), strict=True)
    )
    return {
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


async def stats_cost(args: Args, workdir: Path, index: int) -> dict[str, float]:
    """How long the statistics RPCs take on a database holding many tasks."""
    async with Setup(args, workdir, index + 300) as setup:
        clients = setup.clients()
        await _submit(clients, args.stats_tasks)
        await _close(clients)
        async with Client(setup.broker.target, timeout=60) as client:
            queue_ms, task_ms = [], []
            for _ in range(20):
                t0 = time.perf_counter()
                await client.queue_stats()
                t1 = time.perf_counter()
                await client.task_stats()
                t2 = time.perf_counter()
                queue_ms.append((t1 - t0) * 1000)
                task_ms.append((t2 - t1) * 1000)
    return {
        "queue_stats_ms": statistics.median(queue_ms),
        "task_stats_ms": statistics.median(task_ms),
    }


async def workflow_figures(args: Args, workdir: Path, index: int) -> dict[str, float]:
    """Fan-out/fan-in CPU per node against a plain task's, and chain hop latency."""
    plain = await plain_cost(Setup(args, workdir, index + 500), _wait_done, args.fan)
    fan = await fan_cost(Setup(args, workdir, index + 600), _wait_done, args.fan)
    hops = await chain_hops(Setup(args, workdir, index + 700), _wait_done, args.chain)
    ratio = fan["fan_cpu_per_node_us"] / plain["plain_cpu_per_task_us"]
    return plain | fan | {"fan_cpu_ratio": ratio} | hops


async def soak_run(args: Args, workdir: Path) -> dict[str, Any]:
    config = workdir / "soak.toml"
    config.write_text(f'[defaults.retention]\nsucceeded = "{args.soak_retention}"\n')
    extra = ("--config", str(config), "--retention-interval", "5")
    async with Setup(args, workdir, 900, extra) as setup:
        return await soak(
            setup,
            total=args.soak_tasks,
            step=args.soak_step,
            settle=args.soak_settle,
            backlog=args.soak_backlog,
        )


async def _median_of(
    runs: int, scenario: Callable[[int], Awaitable[dict[str, float]]]
) -> dict[str, Any]:
    samples = [await scenario(i) for i in range(runs)]
    return {
        key: {"median": statistics.median(s[key] for s in samples),
              "runs": [round(s[key], 2) for s in samples]}
        for key in samples[0]
    }  # fmt: skip


async def main(args: Args) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        workdir = Path(tmp)
        report: dict[str, Any] = {
            "backend": (args.db or "sqlite").split(":")[0],
            "replicas": args.replicas,
            "tasks": args.tasks,
            "workers": args.workers,
            "worker_concurrency": args.concurrency,
            "runs": args.runs,
        }
        if args.scenario in ("all", "throughput"):
            report |= await _median_of(args.runs, lambda i: throughput(args, workdir, i))
        if args.scenario == "round-trips":
            if not args.db or normalize_url(args.db).startswith("sqlite"):
                raise SystemExit("--scenario round-trips counts PostgreSQL's: give --db")
            report |= await _median_of(args.runs, lambda i: round_trips(args, workdir, i))
        if args.scenario == "stats":
            report["stats_tasks"] = args.stats_tasks
            report |= await _median_of(args.runs, lambda i: stats_cost(args, workdir, i))
        if args.scenario == "schedule":
            report |= await _median_of(
                args.runs, lambda i: schedule_lag(Setup(args, workdir, i + 400))
            )
        if args.scenario == "events":
            report["subscribers"] = args.subscribers
            report |= await _median_of(
                args.runs,
                lambda i: subscriber_cost(
                    lambda k: Setup(args, workdir, 500 + 2 * i + k),
                    _submit,
                    _wait_done,
                    args.subscribers,
                ),
            )
        if args.scenario == "backlog":
            report["backlog"] = args.backlog
            report |= await _median_of(
                args.runs,
                lambda i: backlog_cost(
                    lambda k: Setup(args, workdir, 1000 + 2 * i + k),
                    _submit,
                    _done_at_least,
                    args.backlog,
                    args.tasks,
                ),
            )
        if args.scenario == "executors":
            report["cpu_seconds"] = args.cpu_seconds
            report |= await _median_of(
                args.runs, lambda i: executor_spans(Setup(args, workdir, i + 500), args.cpu_seconds)
            )
        if args.scenario == "workflow":
            report["fan"], report["chain"] = args.fan, args.chain
            report |= await _median_of(args.runs, lambda i: workflow_figures(args, workdir, i))
        if args.scenario in ("all", "latency"):
            report |= await _median_of(args.runs, lambda i: latency(args, workdir, i))
        if args.scenario == "soak":
            report["tasks"] = args.soak_tasks
            report["runs"] = 1
            report["soak"] = await soak_run(args, workdir)
    return report


def _parse() -> Args:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", help="Database URL (default: a fresh SQLite file per run).")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="Per worker.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="Latency: tasks per second.")
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--json", dest="json_out", help="Also write the report here.")
    parser.add_argument(
        "--scenario",
        choices=[
            "all",
            "throughput",
            "latency",
            "round-trips",
            "stats",
            "schedule",
            "events",
            "executors",
            "workflow",
            "soak",
            "backlog",
        ],
        default="all",
    )
    parser.add_argument(
        "--stats-tasks", type=int, default=1_000_000, help="Stats: tasks in the database."
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="Brokers sharing the database (PostgreSQL only)."
    )
    parser.add_argument("--soak-tasks", type=int, default=1_000_000, help="Soak: tasks in all.")
    parser.add_argument("--soak-step", type=int, default=100_000, help="Soak: RSS every N tasks.")
    parser.add_argument(
        "--soak-settle", type=int, default=200_000, help="Soak: RSS must be flat from here on."
    )
    parser.add_argument(
        "--soak-backlog", type=int, default=20_000, help="Soak: unfinished tasks at most."
    )
    parser.add_argument(
        "--soak-retention", default="60s", help="Soak: how long succeeded tasks are kept."
    )
    parser.add_argument(
        "--subscribers", type=int, default=10, help="Events: WatchEvents subscribers."
    )
    parser.add_argument(
        "--cpu-seconds", type=float, default=1.0, help="Executors: CPU seconds per task."
    )
    parser.add_argument("--fan", type=int, default=10_000, help="Workflow: fan-out width.")
    parser.add_argument("--chain", type=int, default=1_000, help="Workflow: chain length.")
    parser.add_argument(
        "--backlog", type=int, default=1_000_000, help="Backlog: tasks waiting before the drain."
    )
    ns = parser.parse_args()
    if ns.replicas > 1 and not (ns.db or "").startswith("postgres"):
        parser.error("--replicas needs --db postgresql://...; a SQLite file serves one broker")
    return Args(
        ns.db,
        ns.tasks,
        ns.workers,
        ns.runs,
        ns.rate,
        ns.latency_tasks,
        ns.concurrency,
        ns.json_out,
        ns.scenario,
        ns.replicas,
        ns.stats_tasks,
        ns.soak_tasks,
        ns.soak_step,
        ns.soak_settle,
        ns.soak_backlog,
        ns.soak_retention,
        ns.subscribers,
        ns.cpu_seconds,
        ns.fan,
        ns.chain,
        ns.backlog,
    )


def _print(report: dict[str, Any]) -> None:
    print(
        f"backend={report['backend']} replicas={report['replicas']} tasks={report['tasks']} "
        f"workers={report['workers']} "
        f"runs={report['runs']} (median, then each run)"
    )
    for key, value in report.items():
        if isinstance(value, dict) and "median" in value:
            print(f"  {key:<40} {value['median']:>10.1f}   {value['runs']}")
    soak_report = report.get("soak")
    if soak_report:
        print(f"  soak: {soak_report['tasks_per_s']:.0f} tasks/s; broker RSS (MB) by tasks done:")
        for n, mb in soak_report["rss_mb"]:
            print(f"    {n:>9,}  {mb:7.1f}")
        if "note" in soak_report:
            print(f"  note: {soak_report['note']}")
        spread = soak_report["rss_spread_after_settle"]
        verdict = "flat" if soak_report["flat"] else "GROWING"
        if spread is not None:
            print(
                f"  from {soak_report['settle_tasks']:,} tasks on: spread {spread:.1%} ({verdict}, "
                "limit 10%)"
            )


if __name__ == "__main__":
    args = _parse()
    result = asyncio.run(main(args))
    _print(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0)
