"""The load-generating client: one process per system, driven over stdin/stdout.

`python -m bench.peers.client SYSTEM` imports `bench.peers.apps.<SYSTEM>` and answers one
JSON line per command line, so the harness can read this process's CPU apart from its own
and the interpreter's start-up is paid once, before anything is measured:

* `{"cmd": "bulk", "tag": T, "n": N}`: submit N tasks the system's fastest way;
  answers the CPU seconds (`time.process_time()`) and wall time the submission took, and
  the wall-clock time it began.
* `{"cmd": "paced", "tag": T, "n": N, "rate": R}`: submit N tasks one call at a time at
  R per second; answers `[seq, wall time before the call, call seconds]` for each.
* `{"cmd": "quit"}`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from typing import Any, Protocol


class Submitter(Protocol):
    async def bulk(self, tag: str, n: int) -> None: ...
    async def one(self, tag: str, seq: int) -> None: ...
    async def close(self) -> None: ...


async def bulk(submitter: Submitter, tag: str, n: int) -> dict[str, Any]:
    began, cpu0, t0 = time.time(), time.process_time(), time.perf_counter()
    await submitter.bulk(tag, n)
    return {
        "began": began,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - t0,
    }


async def paced(submitter: Submitter, tag: str, n: int, rate: float) -> dict[str, Any]:
    """One submission every 1/rate s on a fixed schedule (a late one does not shift the rest)."""
    interval = 1.0 / rate
    next_at = time.perf_counter()
    sent: list[list[float]] = []
    for seq in range(n):
        sent_at, t0 = time.time(), time.perf_counter()
        await submitter.one(tag, seq)
        sent.append([seq, sent_at, time.perf_counter() - t0])
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return {"sent": sent}


async def serve(system: str) -> None:
    module = importlib.import_module(f"bench.peers.apps.{system}")
    submitter: Submitter = module.Submitter()
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            if command["cmd"] == "bulk":
                answer = await bulk(submitter, command["tag"], command["n"])
            else:
                answer = await paced(submitter, command["tag"], command["n"], command["rate"])
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await submitter.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
