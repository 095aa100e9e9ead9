"""What WatchEvents subscribers cost the broker: end-to-end throughput with and without them.

Each run measures the end-to-end scenario (workers connected, N tasks
submitted as fast as possible) twice on fresh databases: once with no
subscriber, once with S unfiltered subscribers (every event of every task)
reading over gRPC. The subscribers run in a process of their own (`python -m
bench.events TARGET S`), as a dashboard or an event consumer would, not in the
load generator's event loop: there they would slow the submitting client and
count as the broker's loss. They parse each batch (the C protobuf parser) and
count events, so that they keep up as a real client would; on this machine
they still take CPU from the same two cores. Reported: both rates, the cost in
percent, the broker's CPU per task in each case, and the events each
subscriber received.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from bench.proc import cpu_seconds
from taskyard.v1 import event_service_pb2

Submit = Callable[[list[Any], int], Awaitable[None]]
WaitDone = Callable[[str, int], Awaitable[tuple[int, int]]]


async def _subscribe(target: str, counts: list[int], index: int, ready: asyncio.Event) -> None:
    decode = event_service_pb2.WatchEventsResponse.FromString
    async with grpc.aio.insecure_channel(target) as channel:
        method: Any = channel.unary_stream(
            "/taskyard.v1.EventService/WatchEvents", response_deserializer=decode
        )
        call = method(event_service_pb2.WatchEventsRequest().SerializeToString())
        await call.read()  # the first message: subscribed
        ready.set()
        while (message := await call.read()) is not grpc.aio.EOF:
            counts[index] += len(message.events)


async def e2e_rate(
    setup: Any, submit: Submit, wait_done: WaitDone, subscribers: int
) -> dict[str, float]:
    """N tasks end to end with `subscribers` watching; tasks/s and events per subscriber."""
    n = setup.args.tasks
    async with setup:
        await setup.start_workers()
        watchers = await start_watchers(setup.broker.target, subscribers)
        clients = setup.clients()
        cpu0 = cpu_seconds(setup.broker.process.pid)
        t0 = time.time()
        await submit(clients, n)
        _, last = await wait_done(setup.db_url, n)
        rate = n / (last / 1e6 - t0)
        cpu = cpu_seconds(setup.broker.process.pid) - cpu0
        # The watchers' CPU from their start: an upper bound.
        watched_cpu = cpu_seconds(watchers.pid) if watchers else 0.0
        for client in clients:
            await client.close()
        received = await stop_watchers(watchers)
    return {
        "rate": rate,
        "events": received,
        "cpu_us": cpu / n * 1e6,
        "subscribers_cpu_us": watched_cpu / n * 1e6,
    }


async def start_watchers(target: str, n: int) -> asyncio.subprocess.Process | None:
    """A process with `n` subscribers, once all are subscribed."""
    if not n:
        return None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.events", target, str(n), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line.strip() != b"subscribed":
        raise RuntimeError(f"the subscribers did not start: {line!r}")
    return proc


async def stop_watchers(proc: asyncio.subprocess.Process | None) -> int:
    """The fewest events any subscriber received."""
    if proc is None:
        return 0
    proc.send_signal(signal.SIGTERM)
    out, _ = await proc.communicate()
    return int(out.split()[-1])


async def _watch(target: str, n: int) -> None:
    counts = [0] * n
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(_subscribe(target, counts, i, readies[i])) for i in range(n)]
    for ready in readies:
        await ready.wait()
    print("subscribed", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
    print(min(counts), flush=True)


if __name__ == "__main__":
    asyncio.run(_watch(sys.argv[1], int(sys.argv[2])))


async def subscriber_cost(
    make_setup: Callable[[int], Any], submit: Submit, wait_done: WaitDone, subscribers: int
) -> dict[str, float]:
    base = await e2e_rate(make_setup(0), submit, wait_done, 0)
    watched = await e2e_rate(make_setup(1), submit, wait_done, subscribers)
    return {
        "e2e_no_subscribers_per_s": base["rate"],
        f"e2e_{subscribers}_subscribers_per_s": watched["rate"],
        "subscriber_cost_pct": 100 * (1 - watched["rate"] / base["rate"]),
        # The broker's own CPU per task: what the subscribers cost it, apart
        # from what they cost this (client) process on a shared machine.
        "broker_cpu_us_per_task_no_subscribers": base["cpu_us"],
        f"broker_cpu_us_per_task_{subscribers}_subscribers": watched["cpu_us"],
        # What the subscribers' own process spent per task (receiving, parsing), on the
        # same two cores: part of the throughput cost on this machine, not the broker's.
        "subscribers_process_cpu_us_per_task": watched["subscribers_cpu_us"],
        "events_per_subscriber": watched["events"],
    }
