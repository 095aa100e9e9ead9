"""`make bench-dashboard`: the dashboard's first screens with many tasks stored.

`python -m bench.dashboard --tasks 1000000 [--backend sqlite|postgresql|both]`

1. Fills a fresh database (migrated by `taskyard db upgrade`) with N finished and
   waiting tasks written straight into the tables, spread over the last 24 hours
   across queues of very different sizes and types, with labels on some (one in
   100,000 carries a rare one), plus the matching live counters (`queue_count`)
   and an hour of per-minute rollups: what a broker that ran N tasks holds.
   Writing rows directly takes seconds; running N tasks through a broker would
   take many minutes and measure something else.
2. Starts a real broker on it with the HTTP API and times, median of --runs:
   the RPCs behind the overview (GetQueueStats, ListQueues, GetTaskStats by
   minute, ListWorkers) and ListTasks' first page under each kind of filter.
3. Opens the dashboard in headless Chromium (Debian's, as the browser tests do)
   and times, from navigation start, until the overview shows its queues, both
   charts and the workers, and until the tasks page shows its first page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from tests.helpers import ROOT, Broker, python_env
from tests.http_client import Http

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Queue sizes as shares of all tasks: a big default queue down to a rare one.
QUEUES = {
    "default": 0.45, "emails": 0.25, "reports": 0.15, "billing": 0.08, "images": 0.05,
    "exports": 0.0199, "rare": 0.0001,
}  # fmt: skip
TYPES = [f"job.{n}" for n in ("send", "render", "charge", "resize", "export", "sync")]
RARE_TYPE = "job.audit"
PG_ADMIN = os.environ.get("TASKYARD_TEST_PG", "postgresql://127.0.0.1:5432/test")
COLUMNS = (
    "id", "queue", "type", "priority", "state", "attempt", "max_attempts", "lost_count",
    "run_at", "created_at", "updated_at", "started_at", "finished_at", "cancel_requested",
    "labels", "attempt_base", "heartbeat_timeout_us", "error_type", "error_message",
)  # fmt: skip
S_PENDING, S_SUCCEEDED, S_FAILED, S_CANCELLED, S_DEAD = 2, 5, 6, 7, 8


def _ulid(ms: int, rng: random.Random) -> str:
    value = (ms << 80) | rng.getrandbits(80)
    return "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _queue_of(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for name, share in QUEUES.items():
        total += share
        if roll < total:
            return name
    return "default"


def rows(n: int, now_us: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """N tasks, oldest first, created evenly over the last 23 hours; the newest 0.5% wait."""
    rng = random.Random(seed)
    step = 23 * HOUR_US // max(n, 1)  # inside 24 h: retention (24 h for succeeded) stays idle
    for i in range(n):
        created = now_us - (n - i) * step
        queue = _queue_of(rng)
        type_ = RARE_TYPE if i % 50_000 == 1 else TYPES[i % len(TYPES)]
        labels = None
        if i % 100_000 == 3:
            labels = json.dumps({"vip": "yes"})
        elif i % 10 == 0:
            labels = json.dumps({"customer": f"c{i % 1000}"})
        if i >= n - n // 200:
            state, started, finished = S_PENDING, None, None
        else:
            state = {0: S_DEAD, 1: S_DEAD, 2: S_FAILED, 3: S_CANCELLED}.get(i % 100, S_SUCCEEDED)
            started, finished = created + 2_000, created + 50_000
        error = ("ValueError", "bad input") if state in (S_DEAD, S_FAILED) else (None, None)
        attempt = 0 if started is None else 3 if state == S_DEAD else 1
        yield (
            _ulid(created // 1000, rng), queue, type_, 0, state, attempt, 3, 0,
            created, created, finished or created, started, finished, False,
            labels, 0, 10_000_000, *error,
        )  # fmt: skip


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


def _migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "broker", "db", "upgrade", "--db", url],
        env=python_env(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def _summaries(n: int, now_us: int) -> tuple[Counter[tuple[str, int]], list[tuple[Any, ...]]]:
    """queue_count rows, and an hour of per-minute task_stat rollups per (queue, type)."""
    counts: Counter[tuple[str, int]] = Counter()
    stats: Counter[tuple[int, str, str]] = Counter()
    since = now_us - HOUR_US
    for row in rows(n, now_us):
        counts[(row[1], row[4])] += 1
        if row[12] is not None and row[12] >= since:
            stats[(row[12] - row[12] % MINUTE_US, row[1], row[2])] += 1
    rollups = [
        (bucket, q, t, c, c, c, 0, 0, 0, 0, 0, c, 48_000 * c, c, 2_000 * c)
        for (bucket, q, t), c in stats.items()
    ]
    return counts, rollups


STAT_COLUMNS = (
    "bucket", "queue", "type", "submitted", "started", "succeeded", "failed", "cancelled",
    "expired", "retried", "lost", "run_count", "run_sum_us", "wait_count", "wait_sum_us",
)  # fmt: skip


def fill_sqlite(url: str, n: int, now_us: int) -> None:
    _migrate(url)
    db = sqlite3.connect(_sqlite_path(url))
    insert = f"INSERT INTO task ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    batch: list[tuple[Any, ...]] = []
    for row in rows(n, now_us):
        batch.append(row)
        if len(batch) == 20_000:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)
    counts, rollups = _summaries(n, now_us)
    db.executemany(
        "INSERT INTO queue (name, paused, explicit, created_at, updated_at) VALUES (?, 0, 0, ?, ?)",
        [(q, now_us, now_us) for q in QUEUES],
    )
    db.executemany(
        "INSERT INTO queue_count (queue, state, count) VALUES (?, ?, ?)",
        [(q, s, c) for (q, s), c in counts.items()],
    )
    db.executemany(
        f"INSERT INTO task_stat ({', '.join(STAT_COLUMNS)}) VALUES ({', '.join('?' * 15)})",
        rollups,
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


async def fill_postgres(url: str, n: int, now_us: int) -> None:
    _migrate(url)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        batch: list[tuple[Any, ...]] = []
        for row in rows(n, now_us):
            batch.append(row)
            if len(batch) == 50_000:
                await conn.copy_records_to_table("task", records=batch, columns=COLUMNS)
                batch.clear()
        await conn.copy_records_to_table("task", records=batch, columns=COLUMNS)
        counts, rollups = _summaries(n, now_us)
        await conn.executemany(
            "INSERT INTO queue (name, paused, explicit, created_at, updated_at) "
            "VALUES ($1, false, false, $2, $2)",
            [(q, now_us) for q in QUEUES],
        )
        await conn.executemany(
            "INSERT INTO queue_count (queue, state, count) VALUES ($1, $2, $3)",
            [(q, s, c) for (q, s), c in counts.items()],
        )
        await conn.copy_records_to_table("task_stat", records=rollups, columns=STAT_COLUMNS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    await call()  # warm: connections, caches
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def _rpcs(http: Http) -> dict[str, Callable[[], Awaitable[Any]]]:
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    half_day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 12 * 3600))

    def rpc(method: str, body: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        async def go() -> Any:
            reply = await http.call(method, body)
            assert reply.status == 200, (method, body, reply)
            return reply

        return go

    page = {"pageSize": 50}
    return {
        "GetQueueStats": rpc("StatsService/GetQueueStats", {}),
        "ListQueues": rpc("QueueService/ListQueues", {"pageSize": 1000}),
        "GetTaskStats (1 h, by minute)": rpc(
            "StatsService/GetTaskStats", {"startTime": hour_ago, "byMinute": True}
        ),
        "ListWorkers": rpc("WorkerService/ListWorkers", {}),
        "ListTasks (no filter)": rpc("TaskService/ListTasks", page),
        "ListTasks queue=rare": rpc("TaskService/ListTasks", {**page, "queue": "rare"}),
        "ListTasks state=DEAD": rpc("TaskService/ListTasks", {**page, "state": "TASK_STATE_DEAD"}),
        "ListTasks state=PENDING": rpc(
            "TaskService/ListTasks", {**page, "state": "TASK_STATE_PENDING"}
        ),
        "ListTasks type=job.audit (rare)": rpc(
            "TaskService/ListTasks", {**page, "type": RARE_TYPE}
        ),
        "ListTasks queue=exports state=FAILED": rpc(
            "TaskService/ListTasks", {**page, "queue": "exports", "state": "TASK_STATE_FAILED"}
        ),
        "ListTasks labels customer=c10": rpc(
            "TaskService/ListTasks", {**page, "labels": {"customer": "c10"}}
        ),
        "ListTasks labels vip=yes (rare; one bounded page)": rpc(
            "TaskService/ListTasks", {**page, "labels": {"vip": "yes"}}
        ),
        "ListTasks created before 12 h ago": rpc(
            "TaskService/ListTasks", {**page, "createTimeBefore": half_day}
        ),
    }


async def _browser_ms(base: str, runs: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    ready = {
        "overview": (
            "",
            "() => document.querySelector('[data-testid=queues]')?.dataset.loaded === 'yes'"
            " && document.querySelectorAll('[data-testid=queues] tbody tr').length > 0"
            " && document.querySelectorAll('figure.chart').length === 2"
            " && document.querySelector('[data-testid=workers-count]') !== null",
        ),
        "tasks (first page)": (
            "tasks",
            "() => document.querySelectorAll('[data-testid=tasks] tbody tr').length > 0",
        ),
    }
    out: dict[str, float] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=os.environ.get("TASKYARD_CHROMIUM", "/usr/bin/chromium"),
            args=["--disable-dev-shm-usage"],
        )
        try:
            for name, (route, condition) in ready.items():
                times = []
                for _ in range(runs + 1):
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    await page.goto(f"{base}#/{route}")
                    await page.wait_for_function(condition, timeout=60_000)
                    times.append(float(await page.evaluate("performance.now()")))
                    await page.close()
                out[name] = statistics.median(times[1:])  # the first warms the HTTP cache
        finally:
            await browser.close()
    return out


async def measure(url: str, workdir: Path, runs: int) -> dict[str, float]:
    broker = Broker(db_url=url, workdir=workdir, extra_args=["--http-listen", "127.0.0.1:0"])
    await broker.start()
    try:
        http = Http(broker.http_port)
        results = {name: await _median_ms(call, runs) for name, call in _rpcs(http).items()}
        base = f"http://127.0.0.1:{broker.http_port}/"
        for name, ms in (await _browser_ms(base, runs)).items():
            results[f"browser: {name} rendered"] = ms
        return results
    finally:
        await broker.stop()


async def run_backend(backend: str, n: int, runs: int) -> dict[str, float]:
    now_us = time.time_ns() // 1000
    with tempfile.TemporaryDirectory(prefix="taskyard-dash-bench-") as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{workdir / 'taskyard.db'}"
            await asyncio.to_thread(fill_sqlite, url, n, now_us)
            return await _timed(url, workdir, runs, began, n)
        name = f"taskyard_dash_bench_{os.getpid()}"
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
            await fill_postgres(url, n, now_us)
            return await _timed(url, workdir, runs, began, n)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def _timed(url: str, workdir: Path, runs: int, began: float, n: int) -> dict[str, float]:
    print(f"  filled {n:,} tasks in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return await measure(url, workdir, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    ns = parser.parse_args()
    backends = ["sqlite", "postgresql"] if ns.backend == "both" else [ns.backend]
    table: dict[str, dict[str, float]] = {}
    for backend in backends:
        print(f"{backend}: filling and measuring…", file=sys.stderr)
        table[backend] = asyncio.run(run_backend(backend, ns.tasks, ns.runs))
    names = list(next(iter(table.values())))
    print(f"\nDashboard with {ns.tasks:,} tasks stored: median of {ns.runs} runs, ms\n")
    print(f"| what | {' | '.join(backends)} |")
    print(f"|---|{'---:|' * len(backends)}")
    for name in names:
        print(f"| {name} | {' | '.join(f'{table[b][name]:.1f}' for b in backends)} |")


if __name__ == "__main__":
    main()
