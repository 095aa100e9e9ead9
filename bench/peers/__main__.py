"""`make bench-peers`: Taskyard and other Python task queues on the same workload, side by side.

Systems (each with two worker processes; every handler does the same one Redis round trip,
`RPUSH` of its start time, bench/peers/handler.py):

* Taskyard on SQLite, worker concurrency 50 and 256; Taskyard on PostgreSQL, concurrency 50;
* huey (Redis), procrastinate (PostgreSQL), dramatiq (Redis), Celery (Redis).

For each, repeated --runs times with the systems taken in turn (the order rotates from one
repetition to the next, so a slow spell of a shared machine does not fall on one system),
bench/peers/runner.py measures the drain rate, the CPU per task of every process, the
end-to-end rate and the latency at a fixed rate into idle workers; the table shows medians.
The machine's ceiling (`python -m bench.ceiling`, one item per gRPC message) is measured
before and after, and the workplace's own limits script too when --limits-script exists.

The peers are ordinary pip installs in their own virtualenv (.venv-peers, from
bench/peers/requirements.txt), never in the project's: run it with `make bench-peers`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio

from bench.peers import report
from bench.peers.runner import ROOT, Settings, measure
from bench.peers.systems import Spec
from tests.helpers import kill_leftovers

DEFAULT_SYSTEMS = (
    "taskyard-sqlite-c50,taskyard-sqlite-c256,taskyard-pg-c50,huey,procrastinate,dramatiq,celery"
)


def specs(ns: argparse.Namespace) -> dict[str, Spec]:
    p, d = ns.procrastinate_concurrency, ns.dramatiq_threads
    every = [
        Spec("taskyard-sqlite-c50", "Taskyard, SQLite, concurrency 50", "taskyard_app",
             "sqlite", True, "2 workers, 50 coroutines each", 50),
        Spec("taskyard-sqlite-c256", "Taskyard, SQLite, concurrency 256", "taskyard_app",
             "sqlite", True, "2 workers, 256 coroutines each", 256),
        Spec("taskyard-pg-c50", "Taskyard, PostgreSQL, concurrency 50", "taskyard_app",
             "postgresql", True, "2 workers, 50 coroutines each", 50),
        Spec("huey", "huey (Redis)", "huey_app", "redis", False,
             "huey_consumer -k process -w 2 (2 worker processes, one task at a time each)"),
        Spec("procrastinate", "procrastinate (PostgreSQL)", "procrastinate_app", "postgresql",
             True, f"2 procrastinate workers, --concurrency {p} each", p),
        Spec("dramatiq", "dramatiq (Redis)", "dramatiq_app", "redis", False,
             f"dramatiq --processes 2 --threads {d}", d),
        Spec("celery", "Celery (Redis)", "celery_app", "redis", False,
             "celery worker --pool prefork --concurrency 2 (results ignored)"),
    ]  # fmt: skip
    return {s.key: s for s in every}


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS, help="Comma-separated keys.")
    parser.add_argument("--runs", type=int, default=3, help="Repetitions; medians are shown.")
    parser.add_argument("--tasks", type=int, default=5000, help="Drained, and in the CPU pass.")
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="Latency: tasks per second.")
    parser.add_argument("--procrastinate-concurrency", type=int, default=10)
    parser.add_argument("--dramatiq-threads", type=int, default=8, help="dramatiq's default.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--pg", default="postgresql://127.0.0.1:5432/test",
        help="A database to connect to; each session creates and drops its own beside it.",
    )  # fmt: skip
    parser.add_argument("--json", help="Report file (default bench/results/peers-<time>.json).")
    parser.add_argument("--limits-script", help="Also run this grpc_batch.py, if it exists.")
    parser.add_argument("--no-ceiling", action="store_true", help="Skip the ceiling runs.")
    return parser.parse_args()


def _ceiling(limits_script: str | None) -> dict[str, Any]:
    """One item per gRPC message: bench.ceiling, and the workplace's script when present."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.ceiling", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, Any] = {"bench.ceiling": json.loads(run.stdout)["1"]}
    if limits_script and Path(limits_script).is_file():
        out = subprocess.run(
            [sys.executable, limits_script], capture_output=True, text=True, check=True
        ).stdout
        result["limits_script"] = out.strip()
    elif limits_script:
        result["limits_script"] = f"{limits_script}: not found, not run"
    return result


async def _durability(redis_url: str, chosen: list[Spec]) -> dict[str, str]:
    """Whether an acknowledged task survives a crash of the queue's server, as configured."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        aof = (await client.config_get("appendonly")).get("appendonly", "?")
        fsync = (await client.config_get("appendfsync")).get("appendfsync", "?")
    finally:
        await client.aclose()
    redis_durable = aof == "yes" and fsync == "always"
    on_redis = "yes (Redis AOF, fsync always)" if redis_durable else f"no (Redis appendonly={aof})"
    return {s.key: on_redis if s.backend == "redis" else "yes" for s in chosen}


async def run(ns: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    known = specs(ns)
    chosen = [known[k] for k in ns.systems.split(",")]
    settings = Settings(ns.tasks, ns.latency_tasks, ns.rate, ns.redis, ns.pg, workdir)
    samples: dict[str, list[dict[str, float]]] = {s.key: [] for s in chosen}
    for repetition in range(ns.runs):
        shift = repetition % len(chosen)
        for spec in chosen[shift:] + chosen[:shift]:
            print(f"run {repetition + 1}/{ns.runs}: {spec.label}", file=sys.stderr, flush=True)
            samples[spec.key].append(await measure(spec, settings))
    rows = {key: report.medians(s) for key, s in samples.items()}
    return {
        "systems": {s.key: {"label": s.label, "config": s.config, **rows[s.key]} for s in chosen},
        "durable": await _durability(ns.redis, chosen),
        "order": [s.key for s in chosen],
    }


def main() -> None:
    ns = _parse()
    started = datetime.now(UTC)
    header: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "tasks": ns.tasks,
        "latency_tasks": ns.latency_tasks,
        "rate": ns.rate,
        "runs": ns.runs,
        "python": platform.python_version(),
    }
    if not ns.no_ceiling:
        header["ceiling_before"] = _ceiling(ns.limits_script)
    with tempfile.TemporaryDirectory(prefix="taskyard-peers-") as tmp:
        try:
            result = asyncio.run(run(ns, Path(tmp)))
        finally:
            kill_leftovers()
    if not ns.no_ceiling:
        result["ceiling_after"] = _ceiling(None)
    result = header | result | {"load_after": os.getloadavg()}
    out = Path(ns.json or ROOT / "bench" / "results" / f"peers-{started:%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result, ns)
    print(f"\nJSON: {out}")


def _print(result: dict[str, Any], ns: argparse.Namespace) -> None:
    known = specs(ns)
    chosen = [known[k] for k in result["order"]]
    rows = {k: v for k, v in result["systems"].items()}
    print(
        f"\n{result['date']} on {result['host']} ({result['cpus']} CPUs; load average "
        f"{result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after). "
        f"{ns.tasks:,} tasks drained by 2 worker processes; {ns.latency_tasks} submitted at "
        f"{ns.rate:g}/s into idle workers; median of {ns.runs} run(s), systems alternated."
    )
    for when in ("ceiling_before", "ceiling_after"):
        if when in result:
            c = result[when]
            print(f"Machine ceiling ({when.split('_')[1]}): `python -m bench.ceiling` "
                  f"{c['bench.ceiling']:,.0f} items/s, one item per gRPC message")  # fmt: skip
            if "limits_script" in c:
                print(f"  {ns.limits_script}:\n    " + c["limits_script"].replace("\n", "\n    "))
    print()
    print(report.table(chosen, rows, result["durable"]))
    print()
    for spec in chosen:
        print(f"- {spec.label}: {spec.config}")
    print()
    for line in report.ratios(chosen, rows):
        print(line)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
