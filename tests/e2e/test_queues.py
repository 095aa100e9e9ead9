"""Queues as resources and flow control, enforced by the broker across all workers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from tests.e2e.test_recovery import wait_for_state
from tests.helpers import Broker, WorkerProcess, read_record, start_worker
from worker_sdk import Client, RetryPolicy, TaskSpec, TaskState, TaskyardError


def spans(workdir: Path) -> list[tuple[float, float, str]]:
    return [
        (float(line[4]), float(line[5]), line[6])
        for line in read_record(workdir)
        if line[0] == "span"
    ]


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def workers(broker: Broker, tmp_path: Path, n: int, queues: str) -> list[WorkerProcess]:
    return [
        await start_worker(broker, tmp_path, name=f"w{i}", concurrency=4, queues=queues)
        for i in range(n)
    ]


async def test_a_queue_never_runs_more_than_its_max_concurrency(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    await client.create_queue("limited", max_concurrency=3)
    started = await workers(broker, tmp_path, 4, "limited")
    tasks = await client.submit_many(
        TaskSpec("span", {"seconds": 0.02}, queue="limited") for _ in range(500)
    )
    await asyncio.gather(*(client.wait(t.id, timeout=120) for t in tasks))
    intervals = [(s, e) for s, e, _ in spans(tmp_path)]
    assert len(intervals) == 500
    assert peak_overlap(intervals) == 3  # never more, and the limit was used
    for w in started:
        await w.stop()


async def test_a_rate_limit_is_held_within_ten_percent(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    await client.create_queue("metered", rate_limit=(20, 1.0))
    started = await workers(broker, tmp_path, 2, "metered")
    tasks = await client.submit_many(
        TaskSpec("span", {"seconds": 0.001}, queue="metered") for _ in range(100)
    )
    await asyncio.gather(*(client.wait(t.id, timeout=60) for t in tasks))
    starts = sorted(s for s, _, _ in spans(tmp_path))
    # The bucket starts full (20 tokens); after that, 20 per second.
    after_burst = starts[20:]
    rate = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0])
    assert 18 <= rate <= 22, f"{rate:.1f} tasks/s against a limit of 20/s"
    for w in started:
        await w.stop()


async def test_a_paused_queue_accepts_tasks_and_runs_them_only_after_resume(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    await client.create_queue("held")
    paused = await client.pause_queue("held", note="maintenance until 10:00")
    assert paused.paused and paused.pause_note == "maintenance until 10:00"
    started = await workers(broker, tmp_path, 1, "held")
    task = await client.submit("span", queue="held")
    other = await client.submit("echo", 1)  # another queue keeps working
    stats = {s.queue: s for s in await client.queue_stats()}
    assert stats["held"].paused
    assert (await client.get(task.id)).state is TaskState.PENDING
    marker = await client.submit("span", {"seconds": 0}, queue="held")
    await client.resume_queue("held")
    await client.wait(marker.id, timeout=20)
    await client.wait(task.id, timeout=20)
    assert (await client.get(other.id)).state is TaskState.PENDING  # not served by this worker
    for w in started:
        await w.stop()


async def test_concurrency_keys_limit_each_key_and_not_the_queue(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    await client.create_queue("tenants", concurrency_key_limit=1)
    started = await workers(broker, tmp_path, 2, "tenants")
    specs = [
        TaskSpec("span", {"seconds": 0.05, "key": key}, queue="tenants", concurrency_key=key)
        for key in ("acme", "globex", "initech") * 8
    ]
    tasks = await client.submit_many(specs)
    await asyncio.gather(*(client.wait(t.id, timeout=60) for t in tasks))
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s, e, key in spans(tmp_path):
        by_key[key].append((s, e))
    assert {k: peak_overlap(v) for k, v in by_key.items()} == {"acme": 1, "globex": 1, "initech": 1}
    assert peak_overlap([i for v in by_key.values() for i in v]) > 1  # keys ran side by side
    for w in started:
        await w.stop()


async def test_a_full_queue_refuses_submissions_with_resource_exhausted(client: Client) -> None:
    await client.create_queue("small", max_depth=2)
    await client.submit("echo", queue="small")
    await client.submit("echo", queue="small")
    with pytest.raises(TaskyardError) as info:
        await client.submit("echo", queue="small")
    assert (info.value.code, info.value.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUEUE_FULL",
    )
    assert len([t async for t in client.list(queue="small")]) == 2


async def test_queues_are_created_on_first_use_and_managed_as_resources(client: Client) -> None:
    await client.submit("echo", queue="implicit")
    assert "implicit" in {q.name for q in await client.list_queues()}
    with pytest.raises(TaskyardError) as info:
        await client.create_queue("implicit")
    assert info.value.reason == "QUEUE_EXISTS"
    with pytest.raises(TaskyardError) as info:
        await client.get_queue("nowhere")
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "QUEUE_NOT_FOUND")
    with pytest.raises(TaskyardError) as info:
        await client.update_queue("implicit", max_concurrency=-1)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(TaskyardError) as info:
        await client.delete_queue("implicit")
    assert info.value.reason == "QUEUE_NOT_EMPTY"
    await client.delete_queue("implicit", force=True)
    assert "implicit" not in {q.name for q in await client.list_queues()}


async def test_a_queues_default_retry_policy_applies_to_new_tasks(client: Client) -> None:
    await client.create_queue("patient", retry_policy=RetryPolicy(max_attempts=7))
    task = await client.submit("echo", queue="patient")
    assert task.retry_policy is not None and task.retry_policy.max_attempts == 7
    await client.update_queue("patient", max_concurrency=2)  # other fields unchanged
    queue = await client.get_queue("patient")
    assert queue.max_concurrency == 2
    assert queue.retry_policy is not None and queue.retry_policy.max_attempts == 7


async def test_a_drained_worker_gets_no_new_tasks_and_finishes_what_it_holds(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    w1 = await start_worker(broker, tmp_path, name="w1", concurrency=2)
    held = await client.submit("slow", {"seconds": 1})
    await wait_for_state(client, held.id, TaskState.RUNNING)
    listed = {w.worker_id: w for w in await client.workers()}
    assert listed["w1"].sdk.startswith("python") and listed["w1"].leases_in_flight == 1
    sessions = await client.drain_worker("w1")
    assert [s.draining for s in sessions] == [True]
    later = await client.submit("record")
    await client.wait(held.id, timeout=20)  # the held task still finishes on w1
    assert (await client.get(later.id)).state is TaskState.PENDING
    w2 = await start_worker(broker, tmp_path, name="w2")
    await client.wait(later.id, timeout=20)
    assert (await client.get(later.id)).worker_id == "w2"
    with pytest.raises(TaskyardError) as info:
        await client.drain_worker("nobody")
    assert info.value.reason == "WORKER_NOT_FOUND"
    await w1.stop()
    await w2.stop()
