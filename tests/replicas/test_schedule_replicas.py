"""Two brokers on one PostgreSQL database fire one schedule once per fire time, with no leader."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import _postgres
from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, TaskSpec


@pytest.fixture
async def two_replicas(tmp_path: Path) -> AsyncIterator[list[Broker]]:
    url = await _postgres.create()
    brokers = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        brokers.append(Broker(db_url=url, workdir=tmp_path / f"r{i}"))
    await brokers[0].start()
    await brokers[1].start()
    try:
        yield brokers
    finally:
        for b in brokers:
            if b.process is not None and b.process.proc.returncode is None:
                await b.stop()
        await _postgres.drop(url)


async def test_two_replicas_fire_a_per_second_schedule_once_per_second(
    two_replicas: list[Broker], tmp_path: Path
) -> None:
    a, b = two_replicas
    worker = await start_worker(a, tmp_path, name="w", targets=f"{a.target},{b.target}")
    async with Client(a.target) as on_a, Client(b.target) as on_b:
        await on_a.create_schedule(
            "tick", TaskSpec("record"), cron="* * * * * *", overlap="allow_all"
        )
        deadline = time.monotonic() + 30
        while (await on_b.get_schedule("tick")).started_count < 8:
            assert time.monotonic() < deadline, "the schedule did not fire 8 times in 30s"
            await asyncio.sleep(0.2)
        await on_b.pause_schedule("tick")
        fires = [f async for f in on_b.schedule_fires("tick")]
        final = await on_a.get_schedule("tick")
        for f in fires:
            await on_a.wait(f.task_id, timeout=20)
    await worker.stop()
    started = sorted(f.fire_time for f in fires if f.result == "started" and f.fire_time)
    assert len(started) == final.started_count and final.missed_count == 0
    assert all(y - x == timedelta(seconds=1) for x, y in itertools.pairwise(started))
    assert len({f.task_id for f in fires}) == len(fires)  # one task per fire time
    runs = [line[1] for line in read_record(tmp_path) if line[0] == "run"]
    assert sorted(runs) == sorted(f.task_id for f in fires)  # each ran exactly once
    logs = [(a.workdir / "broker.log").read_text(), (b.workdir / "broker.log").read_text()]
    assert all("Traceback" not in log for log in logs)


async def test_two_replicas_hold_max_instances_with_slow_tasks(
    two_replicas: list[Broker], tmp_path: Path
) -> None:
    # Every second, each run sleeps 3.5 s, at most 2 unfinished at once: both brokers
    # plan every fire time, and the count they compare with is the shared database's.
    a, b = two_replicas
    worker = await start_worker(
        a, tmp_path, name="w", concurrency=8, targets=f"{a.target},{b.target}"
    )
    async with Client(a.target) as on_a, Client(b.target) as on_b:
        await on_a.create_schedule(
            "slow", TaskSpec("sleep", {"seconds": 3.5}), cron="* * * * * *", max_instances=2
        )
        deadline = time.monotonic() + 60
        while True:
            seen = await on_b.get_schedule("slow")
            assert seen.running_count <= 2
            if seen.started_count >= 4 and seen.skipped_count >= 3:
                break
            assert time.monotonic() < deadline, f"not enough fires in 60s: {seen}"
            await asyncio.sleep(0.2)
        await on_b.pause_schedule("slow")
        fires = [f async for f in on_a.schedule_fires("slow")]
        final = await on_b.get_schedule("slow")
        for f in fires:
            if f.task_id:
                await on_a.wait(f.task_id, timeout=30)
    await worker.stop()
    started = [f for f in fires if f.result == "started"]
    assert len(started) == final.started_count and final.missed_count == 0
    assert len({f.fire_time for f in fires}) == len(fires)  # each fire time recorded once
    starts = [line for line in read_record(tmp_path) if line[0] == "start"]
    assert sorted(line[1] for line in starts) == sorted(f.task_id for f in started)
    assert max(int(line[4]) for line in starts) == 2  # the cap held, and was reached
    skipped = [f for f in fires if f.result == "skipped"]
    assert skipped and all("max_instances is 2" in f.message for f in skipped)
