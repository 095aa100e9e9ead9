"""Where the latency of one task goes at a low rate into idle workers (issue 20, target 2).

`python -m bench.breakdown` starts a broker and idle workers as `make bench`'s latency
scenario does, then sends, one call at a time at --rate per second:

1. `Health/Check` (--tasks calls): a gRPC round trip that does no work, the floor set by
   waking idle processes and threads at this rate;
2. `GetTask` of one stored task: the same plus a servicer and a database read;
3. `CreateTask` of the `stamp` task, whose handler returns `time.time()` at its start.

For each CreateTask it joins the client's clock (before the call, when the response came),
the broker's own records in the database and the handler's start, all on the one machine's
clock. `created_at` is when the servicer built the row; `finished_at` when the commit that
recorded the result began. (`started_at` equals `created_at` for a task the inserting
commit handed straight to an idle worker, so it adds nothing; the report counts how many
were handed off that way rather than claimed later.)

  send ─(client, network, decode)→ row built ─(committer, commit, reply)→ response;
  row built ─(committer, commit, Lease message, worker SDK)→ handler start
  ─(result message, next commit)→ completion commit began.

No broker code is involved beyond what every task already records: spans inside the commit
(SQLite write vs fsync vs event loop turns) would need the broker's own instrumentation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import create_async_engine

from bench.__main__ import Args, Setup, _wait_done
from bench.percentile import rank
from broker.store.database import normalize_url
from worker_sdk import Client

Percentiles = dict[str, float]


def percentiles(values: list[float]) -> Percentiles:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p90": rank(ordered, 0.90),
        "p99": rank(ordered, 0.99),
    }


async def paced(n: int, rate: float, call: Callable[[], Awaitable[Any]]) -> list[float]:
    """Milliseconds each of n calls took, one every 1/rate s on a fixed schedule."""
    took, interval, next_at = [], 1.0 / rate, time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        took.append((time.perf_counter() - t0) * 1000)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return took


async def _broker_times(db_url: str, ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """created_at, started_at and finished_at (µs) of each task."""
    engine = create_async_engine(normalize_url(db_url))
    query = sa.text(
        "SELECT id, created_at, started_at, finished_at FROM task WHERE id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(query, {"ids": ids})
            return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}
    finally:
        await engine.dispose()


async def _creates(setup: Setup, client: Client, n: int, rate: float) -> dict[str, Any]:
    sent: list[tuple[str, float, float]] = []  # id, before the call, response received

    async def create() -> None:
        before = time.time()
        task = await client.submit("stamp")
        sent.append((task.id, before, time.time()))

    await paced(n, rate, create)
    started: list[float] = await asyncio.gather(
        *(client.wait(task_id, timeout=60) for task_id, _, _ in sent)
    )
    await _wait_done(setup.db_url, n + 21)  # the 20 warm-up tasks and the stored one too
    broker = await _broker_times(setup.db_url, [task_id for task_id, _, _ in sent])
    spans: dict[str, list[float]] = {}
    handed = 0
    for (task_id, before, after), handler in zip(sent, started, strict=True):
        created_us, leased_us, finished_us = broker[task_id]
        handed += leased_us == created_us
        created, finished = created_us / 1e6, finished_us / 1e6
        for name, seconds in {
            "CreateTask call (send → response)": after - before,
            "  send → row built (client, network, decode)": created - before,
            "  row built → response (committer, commit, reply)": after - created,
            "submit → handler start": handler - before,
            "  row built → handler start (committer, commit, Lease message, worker)": handler
            - created,
            "response → handler start (negative: the handler started first)": handler - after,
            "handler start → completion's commit began (result message, committer)": finished
            - handler,
        }.items():
            spans.setdefault(name, []).append(seconds * 1000)
    report: dict[str, Any] = {name: percentiles(values) for name, values in spans.items()}
    report["handed_off_at_insert"] = handed
    return report


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    args = Args(ns.db, 0, ns.workers, 1, ns.rate, ns.tasks, ns.concurrency, None, "breakdown", 1)
    with tempfile.TemporaryDirectory(prefix="taskyard-breakdown-") as tmp:
        async with Setup(args, Path(tmp), 0) as setup:
            await setup.start_workers()
            async with Client(setup.broker.target) as client:
                for _ in range(20):  # warm up connections and caches, as make bench does
                    await client.wait((await client.submit("stamp")).id, timeout=10)
                async with grpc.aio.insecure_channel(setup.broker.target) as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    check = health_pb2.HealthCheckRequest()
                    report = {
                        "Health/Check round trip": percentiles(
                            await paced(ns.tasks, ns.rate, lambda: health.Check(check))
                        )
                    }
                stored = (await client.submit("noop")).id
                report["GetTask round trip"] = percentiles(
                    await paced(ns.tasks, ns.rate, lambda: client.get(stored))
                )
                report |= await _creates(setup, client, ns.tasks, ns.rate)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.breakdown",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", help="Database URL (default: a fresh SQLite file).")
    parser.add_argument("--tasks", type=int, default=500, help="Calls of each kind.")
    parser.add_argument("--rate", type=float, default=100.0, help="Calls per second.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="Per worker.")
    parser.add_argument("--json", dest="json_out", help="Also write the report here.")
    ns = parser.parse_args()
    report = asyncio.run(run(ns))
    print(f"{ns.tasks} calls of each kind at {ns.rate:g}/s into idle workers, milliseconds:")
    print(f"  {'':<72} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, p in report.items():
        if isinstance(p, dict):
            print(f"  {name:<72} {p['p50']:>7.2f} {p['p90']:>7.2f} {p['p99']:>7.2f}")
    print(
        f"{report['handed_off_at_insert']} of {ns.tasks} tasks were handed to an idle worker by "
        "the commit that inserted them; the rest were claimed by a later commit."
    )
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
