"""CPU-bound typed tasks for the executors scenario (`bench/executors.py`).

`burn(seconds)` spins for that much of its own thread's CPU time, so one task is the same
amount of work whichever executor runs it: in threads the GIL lets one run at a time, in the
process pool (one child per core) they run side by side.
"""

from __future__ import annotations

import time

from worker_sdk import ProcessPool, Worker, task


def burn(seconds: float) -> float:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))
    return time.thread_time() - start


@task("bench.cpu.process", executor="process")
def cpu_process(seconds: float) -> float:
    return burn(seconds)


@task("bench.cpu.thread", executor="thread")
def cpu_thread(seconds: float) -> float:
    return burn(seconds)


worker = Worker(concurrency=4, tasks=[cpu_process, cpu_thread], process_pool=ProcessPool())
