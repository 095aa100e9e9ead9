"""Statistics agree with the tasks themselves, also after a restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import grpc
import pytest

from taskyard.v1 import stats_service_pb2, stats_service_pb2_grpc
from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskFailed, TaskSpec, TaskState, TaskyardError


async def counted_from_the_record(client: Client) -> dict[str, Counter[TaskState]]:
    """Counts by queue and state, computed by listing every task."""
    out: dict[str, Counter[TaskState]] = {}
    async for task in client.list(page_size=1000):
        out.setdefault(task.queue, Counter())[task.state] += 1
    return out


async def test_statistics_equal_counts_computed_from_the_record(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=8, queues="work")
    began = time.time()
    ok = await client.submit_many(TaskSpec("echo", i, queue="work") for i in range(30))
    bad = await client.submit_many(
        TaskSpec("fail", queue="work", max_attempts=2) for _ in range(10)
    )
    idle = await client.submit_many(TaskSpec("echo", queue="idle") for _ in range(7))
    for t in idle[:5]:
        await client.cancel(t.id)
    await asyncio.gather(*(client.wait(t.id, timeout=60) for t in ok))
    for t in bad:
        with pytest.raises(TaskFailed):
            await client.wait(t.id, timeout=60)
    await worker.stop()

    async def check() -> None:
        record = await counted_from_the_record(client)
        live = {s.queue: s for s in await client.queue_stats()}
        for queue in ("work", "idle"):
            assert live[queue].counts == dict(record[queue]), queue
        assert live["idle"].oldest_pending_age is not None
        assert live["work"].finished_last_hour == 40
        # The last minute is estimated from per-minute rollups, the oldest minute
        # prorated: all 40 finished since `began`, so at most that share is cut off.
        elapsed = time.time() - began
        assert 40 * (60 - elapsed) / 60 - 0.5 <= live["work"].finished_last_minute <= 40
        total, groups = await client.task_stats(start=datetime.now(UTC) - timedelta(hours=1))
        # 30 succeed; 10 fail twice (retried once, then dead); 5 cancelled while waiting.
        assert (total.submitted, total.succeeded, total.failed) == (47, 30, 10)
        assert (total.retried, total.cancelled, total.started) == (10, 5, 50)
        assert total.success_rate == pytest.approx(30 / 40)
        assert total.run_time.count == 50 and total.wait_time.count == 50
        assert 0 < total.run_time.p50 <= total.run_time.p95 <= total.run_time.p99
        assert sum(total.finished_per_minute) == 45
        assert {(g.queue, g.type) for g in groups} == {
            ("work", "echo"),
            ("work", "fail"),
            ("idle", "echo"),
        }

    await check()
    await broker.stop()
    await broker.start()
    async with Client(broker.target) as fresh:
        client = fresh
        await check()


async def test_a_range_longer_than_31_days_is_invalid(client: Client) -> None:
    now = datetime.now(UTC)
    with pytest.raises(TaskyardError) as info:
        await client.task_stats(start=now - timedelta(days=40), end=now)
    assert (info.value.code, info.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_RANGE",
    )


async def test_by_minute_splits_the_range_into_minutes_that_add_up(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    """The dashboard's charts: one entry per minute, summing to the range's totals."""
    worker = await start_worker(broker, tmp_path, name="wm", concurrency=4)
    done = await client.submit_many(TaskSpec("echo", i) for i in range(12))
    await asyncio.gather(*(client.wait(t.id, timeout=60) for t in done))
    await worker.stop()
    end = datetime.now(UTC)
    request = stats_service_pb2.GetTaskStatsRequest(by_minute=True)
    request.start_time.FromDatetime(end - timedelta(hours=1))
    request.end_time.FromDatetime(end)
    async with broker.channel() as channel:
        stub = stats_service_pb2_grpc.StatsServiceStub(channel)
        reply = await stub.GetTaskStats(request)
        total, minutes = reply.total, reply.total.minutes
        assert [len(g.minutes) for g in reply.groups] == [0]  # the total's only
        # An hour that does not start on a minute boundary touches 61 minute buckets.
        assert len(minutes) in (60, 61)
        starts = [m.start_time.ToMicroseconds() for m in minutes]
        assert starts == sorted(starts) and all(b - a == 60_000_000 for a, b in pairwise(starts))
        assert sum(m.finished for m in minutes) == sum(total.finished_per_minute) == 12
        assert sum(m.started for m in minutes) == total.started == 12
        assert sum(m.wait_time.count for m in minutes) == total.wait_time.count == 12
        assert max(m.wait_time.p99.ToMicroseconds() for m in minutes) > 0
        plain = await stub.GetTaskStats(stats_service_pb2.GetTaskStatsRequest())
        assert len(plain.total.minutes) == 0  # only when asked for
        too_long = stats_service_pb2.GetTaskStatsRequest(by_minute=True)
        too_long.start_time.FromDatetime(end - timedelta(hours=25))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetTaskStats(too_long)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
