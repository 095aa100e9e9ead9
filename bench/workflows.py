"""Workflow scenarios (`python -m bench --scenario workflow`): fan-out/fan-in cost, chain hops.

* fan: the broker's CPU time per node of a fan-out/fan-in of FAN nodes (a root,
  FAN - 2 no-op nodes after it, a join after them all: 10,000 is the most one
  CreateWorkflow takes), against its CPU time per task for FAN plain no-op tasks
  submitted in batches, each on a fresh broker and
  database with the same workers. CPU time is the broker process's user +
  system time (/proc/PID/stat) from submission to the last completion.
* chain: CHAIN no-op nodes one after another; per hop, the time from a parent's
  handler returning to its child's handler starting (both stamped by the
  handler, on the one worker machine), p50 and p99. It covers the completion's
  trip to the broker, the commit that ends the parent and releases and claims
  the child, and the assignment's trip back.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from bench.proc import cpu_seconds
from worker_sdk import Client, TaskSpec, Workflow, WorkflowState

FAN = 10_000
CHAIN = 1_000


class _Setup(Protocol):
    broker: Any
    db_url: str

    async def start_workers(self) -> None: ...


# Waits, from the database (not through the broker, whose CPU is being measured), until
# this many tasks succeeded.
WaitDone = Callable[[str, int], Awaitable[tuple[int, int]]]


async def plain_cost(
    setup: AbstractAsyncContextManager[_Setup], wait_done: WaitDone, n: int = FAN
) -> dict[str, float]:
    """Broker CPU µs per plain task: n no-op tasks through BatchCreateTasks, run to the end."""
    async with setup as s:
        await s.start_workers()
        pid = s.broker.process.pid
        async with Client(s.broker.target, timeout=300) as client:
            before = cpu_seconds(pid)
            for start in range(0, n, 1000):
                await client.submit_many([TaskSpec("noop") for _ in range(min(1000, n - start))])
            await wait_done(s.db_url, n)
            return {"plain_cpu_per_task_us": (cpu_seconds(pid) - before) / n * 1e6}


async def fan_cost(
    setup: AbstractAsyncContextManager[_Setup], wait_done: WaitDone, n: int = FAN
) -> dict[str, float]:
    """Broker CPU µs per node of a fan-out/fan-in of n nodes in all, and its wall time."""
    wf = Workflow("fan")
    root = wf.node("root", "noop")
    middle = [wf.node(f"n{i}", "noop", after=[root]) for i in range(n - 2)]
    wf.node("join", "noop", after=middle)
    async with setup as s:
        await s.start_workers()
        pid = s.broker.process.pid
        async with Client(s.broker.target, timeout=300) as client:
            before, t0 = cpu_seconds(pid), time.perf_counter()
            created = await client.create_workflow(wf)
            await wait_done(s.db_url, n)
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(pid) - before
            done = await client.get_workflow(created.id)
    assert done.state is WorkflowState.SUCCEEDED, done.state
    return {"fan_cpu_per_node_us": cpu / n * 1e6, "fan_wall_s": wall}


async def chain_hops(
    setup: AbstractAsyncContextManager[_Setup], wait_done: WaitDone, n: int = CHAIN
) -> dict[str, float]:
    """Per-hop latency of a chain of n no-op nodes, parent's return to child's start."""
    wf = Workflow("chain")
    for i in range(n):
        wf.node(f"n{i}", "hop", after=[f"n{i - 1}"] if i else [])
    async with setup as s:
        await s.start_workers()
        async with Client(s.broker.target, timeout=300) as client:
            created = await client.create_workflow(wf)
            await wait_done(s.db_url, n)  # from the database: no watcher adds to the broker's work
            done = await client.get_workflow(created.id)
            assert done.state is WorkflowState.SUCCEEDED, done.state
            stamps = [(await client.get(node.task_id)).result for node in done.nodes]
    hops = sorted(
        (child["start"] - parent["end"]) * 1000 for parent, child in itertools.pairwise(stamps)
    )
    return {
        "chain_hop_p50_ms": statistics.median(hops),
        "chain_hop_p99_ms": hops[max(0, int(len(hops) * 0.99) - 1)],
    }
