"""The measuring parts of bench/: profile parsing, percentile ranks, CPU of process trees,
the comparison's ratios, the handlers' completion counts and PostgreSQL's round trips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from bench.breakdown import percentiles
from bench.peers import handler, report
from bench.peers.systems import Spec
from bench.percentile import rank
from bench.pg_wire import WireCounter, through, upstream
from bench.proc import cpu_seconds, tree_cpu
from bench.profile import parse_collapsed, top_frames
from tests.databases import ADMIN_URL

COLLAPSED = """\
main (a.py:1);loop (b.py:2);commit (c.py:3) 6
main (a.py:1);loop (b.py:2) 3
main (a.py:1);loop (b.py:2);commit (c.py:3);write (d.py:4) 1
"""


def test_collapsed_stacks_give_self_and_inclusive_counts() -> None:
    profile = parse_collapsed("broker", COLLAPSED)
    assert profile.samples == 10
    # Self: the innermost frame of each line.
    assert profile.self_counts == {"commit (c.py:3)": 6, "loop (b.py:2)": 3, "write (d.py:4)": 1}
    # Inclusive: every line the frame appears in.
    assert profile.total_counts["loop (b.py:2)"] == 10
    assert profile.total_counts["commit (c.py:3)"] == 7
    lines = top_frames(profile, 1)
    assert lines[-1].split() == ["60.0%", "70.0%", "commit", "(c.py:3)"]


def test_a_recursive_frame_counts_once_per_sample_inclusively() -> None:
    profile = parse_collapsed("worker", "f (x:1);f (x:1);f (x:1) 4\n")
    assert profile.total_counts["f (x:1)"] == 4


def test_percentiles_take_the_rank_make_bench_takes() -> None:
    values = [float(v) for v in range(1, 501)]  # 1..500
    # int(500 * 0.99) - 1 = 494: the 495th smallest, as bench/__main__.py's latency reads it.
    assert rank(values, 0.99) == 495.0
    assert percentiles(values) == {"p50": 250.5, "p90": 450.0, "p99": 495.0}


def test_tree_cpu_counts_the_live_children_a_process_started() -> None:
    # The child burns 0.3 s of CPU, then sleeps: its CPU shows only through the live
    # process tree (the parent has not reaped it, so its own cutime is still 0).
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    burn += "time.sleep(120)\n"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while tree_cpu(parent.pid) - cpu_seconds(parent.pid) < 0.25:
            assert time.monotonic() < deadline, "the child's CPU never showed"
            time.sleep(0.01)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(60)


def _row(process: float, cpu: float, p50: float, call: float) -> dict[str, dict[str, float]]:
    values = {"process_per_s": process, "cpu_total_us": cpu, "start_p50_ms": p50}
    values |= {"submit_call_p50_ms": call}
    return {key: {"median": value} for key, value in values.items()}


def test_ratios_are_against_taskyard_on_sqlite_at_concurrency_50() -> None:
    specs = [
        Spec(report.BASELINE, "Taskyard", "taskyard_app", "sqlite", True, ""),
        Spec("huey", "huey (Redis)", "huey_app", "redis", False, ""),
    ]
    rows = {report.BASELINE: _row(4000, 400, 2.0, 2.0), "huey": _row(6000, 200, 0.5, 0.5)}
    (line,) = report.ratios(specs, rows)
    assert "process rate 1.50x" in line
    assert "CPU per task 0.50x" in line
    assert "submit→start p50 0.25x" in line


def test_completions_are_counted_per_tag_and_flushed_to_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "DONE_DIR", str(tmp_path))
    done = handler._Done()
    for _ in range(3):
        done.record("drain")
    done.record("lat")
    path = tmp_path / f"{os.getpid()}.json"
    deadline = time.monotonic() + 30
    while not path.exists() or json.loads(path.read_text()).get("lat", [0])[0] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    counts = json.loads(path.read_text())
    assert counts["drain"][0] == 3
    assert counts["drain"][1] <= counts["lat"][1] <= time.time()


async def test_the_wire_counter_counts_the_round_trips_a_client_waits_for() -> None:
    """Each Sync, Flush or simple Query is one wait for the server; COMMITs are counted apart."""
    relay = WireCounter(*upstream(ADMIN_URL))
    port = await relay.start()
    conn = await asyncpg.connect(through(ADMIN_URL, port), timeout=5)
    tally = relay.tally
    try:
        assert (tally.round_trips, tally.commits) == (0, 0)  # start-up is not counted
        await conn.fetchval("SELECT $1::int", 1)
        assert tally.round_trips == 2  # prepared (Flush), then run (Sync)
        await conn.fetchval("SELECT $1::int", 2)
        assert tally.round_trips == 3  # prepared once
        await conn.executemany("SELECT $1::int", [(i,) for i in range(100)])
        assert tally.round_trips == 4  # a hundred rows, pipelined: one wait
        async with conn.transaction():
            await conn.fetchval("SELECT $1::int", 3)
        assert (tally.round_trips, tally.commits) == (7, 1)  # BEGIN, the SELECT, COMMIT
    finally:
        await conn.close()
        await relay.close()
