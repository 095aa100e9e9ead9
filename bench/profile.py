"""`make profile`: where the broker and a worker spend their CPU under load (py-spy).

Runs `make bench`'s end-to-end scenario once (a broker, --workers worker processes, --tasks
no-op tasks submitted while they run), its process scenario (`--scenario drain`: the tasks
queued first, then the workers started) or its latency scenario (one CreateTask at a time at
--rate into idle workers), with `py-spy record` sampling the broker and the first worker
from outside the processes (`--nonblocking`: the targets are not paused to be read, so the
profile perturbs them little; an occasional torn stack is the price). Each profile is
written as collapsed stacks (`<name>.txt`, one `frame;frame;... count` line per stack),
which speedscope (https://www.speedscope.app) and flamegraph.pl open as they are, and the
top functions by self time (samples whose innermost Python frame is in that function,
idle threads excluded; `--function` groups a function's lines) are printed, with each
one's inclusive share.

py-spy comes with the dev extras (pyproject.toml); it reads other processes' memory
through ptrace, so it needs to run as root or with `kernel.yama.ptrace_scope` = 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.__main__ import Args, CpuMeter, Setup, _submit, _wait_done
from bench.events import start_watchers, stop_watchers
from worker_sdk import Client

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    name: str
    samples: int
    self_counts: collections.Counter[str]
    total_counts: collections.Counter[str]


def parse_collapsed(name: str, text: str) -> Profile:
    """Self and inclusive sample counts per frame from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return Profile(name, samples, own, total)


def top_frames(profile: Profile, n: int) -> list[str]:
    lines = [f"{profile.name}: {profile.samples} samples; top {n} frames by self time"]
    lines.append(f"  {'self':>6} {'total':>6}  frame")
    for frame, count in profile.self_counts.most_common(n):
        share = 100 * count / max(profile.samples, 1)
        inclusive = 100 * profile.total_counts[frame] / max(profile.samples, 1)
        lines.append(f"  {share:5.1f}% {inclusive:5.1f}%  {frame}")
    return lines


class Recorder:
    """`py-spy record` attached to one process until `stop` (SIGINT makes it write)."""

    def __init__(self, pid: int, out: Path, rate: int, native: bool) -> None:
        self.out = out
        self._args = [
            _py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
            "--output", str(out), "--function",
        ]  # fmt: skip
        # py-spy reads C frames only from a paused process: --native costs the target more.
        self._args.append("--native" if native else "--nonblocking")
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )

    async def stop(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            _, err = await self._proc.communicate()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: make venv (it is in the dev extras)")
    return found


async def _end_to_end(setup: Setup, tasks: int) -> str:
    clients = setup.clients()
    meter = CpuMeter(setup)
    await meter.start()
    t0 = time.time()
    await _submit(clients, tasks)
    _, last = await _wait_done(setup.db_url, tasks)
    cpu = await meter.per_task_us(tasks)
    for client in clients:
        await client.close()
    parts = ", ".join(f"{k.split('_')[1]} {v:.0f} µs" for k, v in cpu.items())
    return f"end to end {tasks / (last / 1e6 - t0):,.0f} tasks/s; CPU per task: {parts}"


async def _latency(setup: Setup, tasks: int, rate: float) -> str:
    async with Client(setup.broker.target) as client:
        interval, next_at = 1.0 / rate, time.perf_counter()
        for _ in range(tasks):
            await client.submit("noop")
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await _wait_done(setup.db_url, tasks)
    return f"{tasks} tasks at {rate:g}/s into idle workers"


async def run(ns: argparse.Namespace, out: Path) -> None:
    args = Args(
        ns.db, ns.tasks, ns.workers, 1, ns.rate, ns.tasks, ns.concurrency, None, "profile", 1
    )
    with tempfile.TemporaryDirectory(prefix="taskyard-profile-") as tmp:
        async with Setup(args, Path(tmp), 0) as setup:
            if ns.scenario == "drain":  # the backlog first, as make bench's process scenario
                clients = setup.clients()
                await _submit(clients, ns.tasks)
                for client in clients:
                    await client.close()
            await setup.start_workers()
            assert setup.broker.process is not None
            # Unfiltered, in a process of their own, as `make bench --scenario events`.
            watchers = await start_watchers(setup.broker.target, ns.subscribers)
            recorders = [
                Recorder(setup.broker.process.pid, out / "broker.txt", ns.rate_hz, ns.native),
                Recorder(setup.workers[0].process.pid, out / "worker.txt", ns.rate_hz, ns.native),
            ]
            for recorder in recorders:
                await recorder.start()
            if ns.scenario == "drain":  # already draining: py-spy misses its first moments
                first, last = await _wait_done(setup.db_url, ns.tasks)
                summary = f"drained {ns.tasks / ((last - first) / 1e6):,.0f} tasks/s"
            else:
                await asyncio.sleep(1.0)  # py-spy attaches before the load starts
            if ns.scenario == "e2e":
                summary = await _end_to_end(setup, ns.tasks)
            elif ns.scenario == "latency":
                summary = await _latency(setup, ns.tasks, ns.rate)
            for recorder in recorders:
                await recorder.stop()
            received = await stop_watchers(watchers)
    if ns.subscribers:
        summary += f"; {ns.subscribers} subscribers, each received {received:,} events"
    print(summary)
    for recorder in recorders:
        profile = parse_collapsed(recorder.out.stem, recorder.out.read_text())
        print()
        print("\n".join(top_frames(profile, ns.top)))
    print(f"\nCollapsed stacks (speedscope, flamegraph.pl): {out}/broker.txt, {out}/worker.txt")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", choices=["e2e", "drain", "latency"], default="e2e")
    parser.add_argument("--db", help="Database URL (default: a fresh SQLite file).")
    parser.add_argument("--tasks", type=int, help="Default: 20,000 (e2e, drain), 500 (latency).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="Per worker.")
    parser.add_argument("--rate", type=float, default=100.0, help="Latency: tasks per second.")
    parser.add_argument(
        "--subscribers", type=int, default=0, help="Unfiltered WatchEvents subscribers (e2e)."
    )
    parser.add_argument("--rate-hz", type=int, default=250, help="py-spy samples per second.")
    parser.add_argument("--native", action="store_true", help="Include C frames (slower).")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", help="Directory (default bench/results/profile-<time>).")
    ns = parser.parse_args()
    if ns.tasks is None:
        ns.tasks = 500 if ns.scenario == "latency" else 20_000
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(ns.out or ROOT / "bench" / "results" / f"profile-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(ns, out))


if __name__ == "__main__":
    main()
