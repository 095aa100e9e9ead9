"""Several brokers on one PostgreSQL database serve workers and clients together."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.conftest import _postgres
from tests.e2e.test_recovery import open_raw, read_kind, wait_for_state
from tests.helpers import Broker, read_record, start_worker, stubs
from worker_sdk import Client, TaskSpec, TaskState


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await _postgres.create()
    try:
        yield url
    finally:
        await _postgres.drop(url)


@pytest.fixture
async def replicas(pg_url: str, tmp_path: Path) -> AsyncIterator[list[Broker]]:
    brokers = []
    for i in range(3):
        workdir = tmp_path / f"replica{i}"
        workdir.mkdir()
        args = ["--lease-duration", "3", "--sweep-interval", "0.2"]
        brokers.append(Broker(db_url=pg_url, workdir=workdir, extra_args=args))
    await asyncio.gather(*(b.start() for b in brokers))
    try:
        yield brokers
    finally:
        for b in brokers:
            if b.process is not None and b.process.proc.returncode is None:
                await b.stop()


def all_targets(brokers: list[Broker], first: int) -> str:
    ordered = brokers[first:] + brokers[:first]
    return ",".join(b.target for b in ordered)


async def test_three_replicas_run_5000_tasks_once_each_through_a_replica_crash(
    replicas: list[Broker], tmp_path: Path
) -> None:
    concurrency = 8
    workers = [
        await start_worker(
            replicas[i], tmp_path, name=f"w{i}", concurrency=concurrency,
            targets=all_targets(replicas, i),
        )
        for i in range(3)
    ]  # fmt: skip
    ids: list[str] = []
    for start in range(0, 5000, 500):
        replica = replicas[(start // 500) % 3]
        async with Client(replica.target, timeout=60) as client:
            specs = [TaskSpec("counted", {"n": start + i}) for i in range(500)]
            ids += [t.id for t in await client.submit_many(specs)]

    async with Client(replicas[1].target, timeout=60) as survivor:
        # Kill one replica once the run is well under way (tasks run in order).
        await survivor.wait(ids[1500], timeout=120)
        await replicas[0].kill()
        killed_at = time.time()
        for task_id in ids:
            await survivor.wait(task_id, timeout=120)
        succeeded = {t.id async for t in survivor.list(state="succeeded", page_size=1000)}
        sample = ids[::250]
        histories = {task_id: await survivor.attempts(task_id) for task_id in sample}
    for w in workers:
        await w.stop()

    assert succeeded == set(ids)
    for task_id, history in histories.items():
        assert sum(a.outcome == "succeeded" for a in history) == 1, task_id
    runs = [line for line in read_record(tmp_path) if line[0] == "run"]
    per_task = Counter(line[1] for line in runs)
    assert set(per_task) == set(ids)
    reruns = [t for t, n in per_task.items() if n > 1]
    # Only tasks in flight when the replica died may run again: at most what
    # the workers could hold at once.
    assert len(reruns) <= 3 * concurrency, f"{len(reruns)} re-runs after the kill at {killed_at}"
    peaks: dict[str, int] = defaultdict(int)
    for line in runs:
        peaks[line[3]] = max(peaks[line[3]], int(line[5]))
    assert max(peaks.values()) <= concurrency, f"a worker ran more than it granted: {peaks}"


async def test_a_lease_taken_on_one_replica_is_heartbeated_and_completed_on_another(
    replicas: list[Broker],
) -> None:
    a, b = replicas[0], replicas[1]
    async with Client(a.target) as client, stubs(a) as on_a, stubs(b) as on_b:
        task = await client.submit("record", {"v": 1})
        first, _ = await open_raw(on_a, "mover", credits=1)
        lease = (await read_kind(first, "assignments")).assignments.assignments[0]
        assert lease.task_id == task.id
        second, _ = await open_raw(on_b, "mover", credits=0)
        beat = pb.Heartbeat(task_id=task.id, lease_id=lease.lease_id)
        await second.write(pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=[beat])))
        ack = (await read_kind(second, "heartbeat_acks")).heartbeat_acks.acks[0]
        assert not ack.HasField("error")
        done = pb.Completion(task_id=task.id, lease_id=lease.lease_id)
        done.result.json.string_value = "via b"
        await second.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
        ack2 = (await read_kind(second, "completion_acks")).completion_acks.acks[0]
        assert not ack2.HasField("error")
        assert await client.wait(task.id, timeout=10) == "via b"
        first.cancel()
        second.cancel()


async def test_a_cancel_on_any_replica_reaches_the_worker_within_a_second(
    replicas: list[Broker], tmp_path: Path
) -> None:
    worker = await start_worker(replicas[0], tmp_path, name="w0")
    async with Client(replicas[0].target) as on_a, Client(replicas[2].target) as on_c:
        task = await on_a.submit("slow", {"seconds": 30})
        await wait_for_state(on_a, task.id, TaskState.RUNNING)
        asked = time.time()
        await on_c.cancel(task.id)
        await wait_for_state(on_a, task.id, TaskState.CANCELLED)
    stopped = [float(line[4]) for line in read_record(tmp_path) if line[0] == "cancelled"]
    assert len(stopped) == 1 and stopped[0] - asked < 1.0
    await worker.stop()


async def test_work_submitted_on_one_replica_wakes_a_worker_on_another_at_once(
    replicas: list[Broker], tmp_path: Path
) -> None:
    worker = await start_worker(replicas[2], tmp_path, name="w2")
    async with Client(replicas[0].target) as client:
        for _ in range(3):  # warm up connections
            await client.wait((await client.submit("echo", 0)).id, timeout=10)
        lags = []
        for _ in range(10):
            sent = time.time()
            task = await client.submit("record")
            await client.wait(task.id, timeout=10)
            started = float(next(line for line in read_record(tmp_path) if line[1] == task.id)[4])
            lags.append(started - sent)
    # NOTIFY, not the 1 s fallback poll, wakes the other replica.
    assert sorted(lags)[len(lags) // 2] < 0.5, lags
    await worker.stop()
