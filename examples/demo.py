"""`make demo`: a self-contained tour of Taskyard.

Starts a broker on a temporary SQLite file and the demo worker
(examples/demo_worker.py) as real processes, submits a few tasks, follows one's
progress, shows a failure being retried, and stops everything.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from worker_sdk import Client, TaskFailed

ROOT = Path(__file__).resolve().parent.parent


async def _start(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", *args,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip


async def _port(broker: asyncio.subprocess.Process) -> int:
    assert broker.stderr is not None
    while line := (await broker.stderr.readline()).decode():
        if match := re.search(r"listening on [^:]+:(\d+)", line):
            return int(match.group(1))
    raise RuntimeError("the broker did not start")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        broker = await _start("broker", "--listen", "127.0.0.1:0", "--db", db)
        target = f"127.0.0.1:{await _port(broker)}"
        worker = await _start(
            "worker", "examples.demo_worker:worker", "--target", target, "--log-level", "WARNING"
        )
        print(f"broker on {target}, demo worker started\n")
        async with Client(target) as client:
            echo = await client.submit("echo", {"hello": "world"})
            print(f"echo {echo.id} -> {await client.wait(echo.id, timeout=30)}")

            sleep = await client.submit("sleep", {"seconds": 2})
            print(f"sleep {sleep.id}:")
            async for task in client.watch(sleep.id):
                p = task.progress
                status = f"  {task.state.value}"
                if p is not None:
                    status += f" {p.percent:3.0f}% step {p.step}/{p.total_steps} {p.message}"
                print(status)

            fail = await client.submit("fail", max_attempts=2)
            try:
                await client.wait(fail.id, timeout=30)
            except TaskFailed as failed:
                error = failed.task.error
                print(
                    f"fail {fail.id} -> {failed.task.state.value} after "
                    f"{failed.task.attempt} attempts ({error.type if error else '?'})"
                )
        for process in (worker, broker):
            process.send_signal(signal.SIGTERM)
            await process.wait()
        print("\nstopped")


if __name__ == "__main__":
    asyncio.run(main())
