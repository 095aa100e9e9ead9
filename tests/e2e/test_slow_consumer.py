"""A Lease stream that never reads cannot grow the broker's memory without bound.

Its outbox is bounded in bytes, not only by the credits it granted (10,000 here):
once full, the stream gets no more assignments; the leases it was given lapse (it
sends no heartbeats) and their tasks run on a worker that reads. Nothing is lost,
and the memory comes back when the stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskSpec, TaskState

TASKS = 3000
PAYLOAD = "x" * 50_000  # 50 kB: 150 MB in all, more than the growth allowed
BATCH = 100
MAX_GROWTH_MB = 100
log = logging.getLogger(__name__)


@pytest.fixture
def broker_args() -> list[str]:
    return ["--lease-duration", "2", "--sweep-interval", "0.2"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Peak:
    """Samples a process's resident size until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.high = rss_mb(pid)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.high = max(self.high, rss_mb(self.pid))
            await asyncio.sleep(0.05)  # a sampling rate: there is no event to wait for

    async def stop(self) -> float:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.high = max(self.high, rss_mb(self.pid))
        return self.high


async def submit(client: Client, n: int) -> list[str]:
    ids: list[str] = []
    for _ in range(0, n, BATCH):
        tasks = await client.submit_many(TaskSpec("echo", {"blob": PAYLOAD}) for _ in range(BATCH))
        ids += [t.id for t in tasks]
    return ids


@pytest.mark.timeout(300)  # 200 MB of tasks through a real broker and worker
async def test_a_stream_that_never_reads_holds_little_memory_and_loses_nothing(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    assert broker.process is not None
    pid = broker.process.pid
    # Warm up: the database caches (50 MB written) and the allocator reach their working size.
    warm = await start_worker(broker, tmp_path, name="warm", concurrency=8)
    for task_id in await submit(client, 1000):
        await client.wait(task_id, timeout=60)
    await warm.stop()
    baseline = rss_mb(pid)

    peak = Peak(pid)
    try:
        async with broker.channel() as channel:
            call = channel.stream_stream(
                "/taskyard.v1.WorkerService/Lease",
                request_serializer=pb.LeaseRequest.SerializeToString,
                response_deserializer=pb.LeaseResponse.FromString,
            )()
            hello = pb.Hello(worker_id="deaf", task_types=["echo"], credits=10_000)
            await call.write(pb.LeaseRequest(hello=hello))  # and never reads
            ids = await submit(client, TASKS)
            # The deaf stream got what its outbox holds, not all its credits allow.
            assert rss_mb(pid) - baseline < MAX_GROWTH_MB, (baseline, rss_mb(pid))

            # A worker that reads runs every task: those the deaf stream never got,
            # and those whose leases lapsed in its outbox.
            worker = await start_worker(broker, tmp_path, name="reader", concurrency=16)
            for task_id in ids:
                assert await client.wait(task_id, timeout=120) == {"blob": PAYLOAD}
            deaf = [w for w in await client.workers() if w.worker_id == "deaf"]
            assert deaf and deaf[0].leases_in_flight < TASKS / 4, deaf
            call.cancel()
    finally:
        high = await peak.stop()
    assert high - baseline < MAX_GROWTH_MB, (baseline, high)

    for task_id in ids:
        done = await client.get(task_id, full=False)
        assert done.state is TaskState.SUCCEEDED and done.worker_id == "reader"
    # The deaf stream's outbox is freed with it (the broker trims its heap then).
    await worker.stop()
    after = rss_mb(pid)
    log.info("broker RSS: %.0f MB warm, %.0f MB at the peak, %.0f MB after", baseline, high, after)
    assert after - baseline < MAX_GROWTH_MB / 2, (baseline, high, after)
