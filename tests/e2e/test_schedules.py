"""Schedules end to end: a real broker fires them, real workers run the tasks.

Downtime is simulated by restarting the broker with its clock shifted
(TASKYARD_CLOCK_OFFSET): the restarted broker sees hours pass that the test
never waits for. A fire is a commit, not an event a client can subscribe to,
so the waits below poll the schedule's counters, each under a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from tests.cli import taskyard
from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, Schedule, TaskSpec, TaskyardError

HOUR = 3600.0


async def eventually(
    check: Callable[[], Awaitable[Schedule]],
    ok: Callable[[Schedule], bool],
    *,
    timeout: float = 20.0,
) -> Schedule:
    """Poll a schedule until `ok` holds; fires are commits, not events to subscribe to."""
    deadline = time.monotonic() + timeout
    while True:
        schedule = await check()
        if ok(schedule):
            return schedule
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {schedule}")
        await asyncio.sleep(0.1)


async def test_a_per_second_cron_submits_labelled_tasks_once_per_fire_time(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    await client.create_schedule(
        "tick", TaskSpec("record", {"n": 1}), cron="* * * * * *", overlap="allow_all"
    )
    done = await eventually(
        lambda: client.get_schedule("tick"), lambda s: s.started_count >= 4, timeout=30
    )
    fires = [f async for f in client.schedule_fires("tick")]
    started = [f for f in fires if f.result == "started"]
    assert len(started) >= 4 and done.missed_count == 0 and done.skipped_count == 0
    seconds = sorted(f.fire_time for f in started if f.fire_time)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(seconds))
    task = await client.get(started[-1].task_id)
    assert task.labels["taskyard.schedule"] == "tick"
    assert task.labels["taskyard.fire_time"] == started[-1].fire_time.isoformat().replace(  # type: ignore[union-attr]
        "+00:00", "Z"
    )
    assert task.payload == {"n": 1}
    await client.wait(started[-1].task_id, timeout=10)
    await client.delete_schedule("tick")
    await worker.stop()
    runs = [line for line in read_record(tmp_path) if line[0] == "run"]
    assert len({line[1] for line in runs}) == len(runs)  # no task ran twice


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(TaskyardError) as caught:
        await call
    assert (caught.value.code, caught.value.reason) == (code, reason)
    return caught.value.message


async def test_schedule_errors_carry_their_codes_and_reasons(client: Client) -> None:
    task = TaskSpec("echo")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    message = await expect_error(
        client.create_schedule("a", task, cron="0 25 * * *"), invalid, "INVALID_SCHEDULE_SPEC"
    )
    assert "hour field" in message
    await expect_error(
        client.create_schedule("a", task, cron="0 * * * *", time_zone="Nowhere/Else"),
        invalid,
        "INVALID_SCHEDULE_SPEC",
    )
    await expect_error(client.create_schedule("a", task), invalid, "INVALID_SCHEDULE_SPEC")
    await expect_error(client.create_schedule("a", TaskSpec(""), every=60), invalid, "INVALID_TYPE")
    await expect_error(
        client.create_schedule("bad name", task, every=60), invalid, "INVALID_SCHEDULE_NAME"
    )
    await expect_error(
        client.create_schedule("a", task, every=60, catchup_limit=5000),
        invalid,
        "INVALID_SCHEDULE_POLICY",
    )
    await client.create_schedule("a", task, every=60)
    await expect_error(
        client.create_schedule("a", task, every=60),
        grpc.StatusCode.ALREADY_EXISTS,
        "SCHEDULE_EXISTS",
    )
    missing = grpc.StatusCode.NOT_FOUND
    for call in (
        client.get_schedule("nope"),
        client.update_schedule("nope", every=30),
        client.pause_schedule("nope"),
        client.resume_schedule("nope"),
        client.run_schedule("nope"),
        client.delete_schedule("nope"),
        client.preview_schedule("nope"),
    ):
        await expect_error(call, missing, "SCHEDULE_NOT_FOUND")
    await expect_error(client.preview_schedule(), invalid, "INVALID_ARGUMENT")
    await expect_error(
        client.update_schedule("a", cron="*/0 * * * *"), invalid, "INVALID_SCHEDULE_SPEC"
    )


async def test_update_preview_run_and_history(client: Client) -> None:
    created = await client.create_schedule(
        "nightly", TaskSpec("echo", {"v": 1}), cron="30 2 * * *", time_zone="Europe/Berlin"
    )
    assert created.state == "active" and len(created.next_fire_times) == 5
    after = datetime(2026, 3, 28, 12, tzinfo=UTC)
    spring = await client.preview_schedule("nightly", count=2, after=after)
    assert [t.strftime("%m-%d %H:%M") for t in spring] == ["03-29 01:30", "03-30 00:30"]
    unsaved = await client.preview_schedule(every=900, count=3, after=after)
    assert [t.strftime("%H:%M") for t in unsaved] == ["12:15", "12:30", "12:45"]
    updated = await client.update_schedule("nightly", time_zone="UTC", overlap="allow_all")
    assert updated.cron == "30 2 * * *" and updated.time_zone == "UTC"
    assert updated.overlap == "allow_all" and updated.task.payload == {"v": 1}
    assert all(t.hour == 2 and t.minute == 30 for t in updated.next_fire_times)
    task = await client.run_schedule("nightly")
    assert task.labels["taskyard.schedule"] == "nightly" and task.payload == {"v": 1}
    again = await client.get_schedule("nightly")
    assert again.started_count == 1 and again.last_fire is not None
    assert again.last_fire.manual and again.last_fire.task_id == task.id
    assert again.next_fire_times == updated.next_fire_times  # the timetable did not move
    assert [s.name async for s in client.list_schedules(page_size=1)] == ["nightly"]


async def restart(broker: Broker, monkeypatch: pytest.MonkeyPatch, *, hours: float) -> None:
    """Stop the broker, then start it again as if `hours` had passed meanwhile."""
    await broker.stop()
    monkeypatch.setenv("TASKYARD_CLOCK_OFFSET", str(hours * HOUR))
    await broker.start()


@pytest.mark.parametrize(
    ("catchup", "started", "missed"),
    [
        # Fire times at +0.5h, +1.5h, … +4.5h fall in the 5 hours the broker is down.
        ("skip", [], 5),
        ("one", [4.5], 4),
        ("all", [2.5, 3.5, 4.5], 2),  # catchup_limit 3: the latest three run
    ],
)
async def test_a_broker_down_across_fire_times_catches_up_by_policy_on_restart(
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    catchup: str,
    started: list[float],
    missed: int,
) -> None:
    start = datetime.now(UTC) + timedelta(minutes=30)
    async with Client(broker.target) as client:
        await client.create_schedule(
            "hourly", TaskSpec("echo"), every=HOUR, start_time=start,
            catchup=catchup, catchup_limit=3, overlap="allow_all",
        )  # fmt: skip
    await restart(broker, monkeypatch, hours=5)
    async with Client(broker.target) as client:
        after = await eventually(
            lambda: client.get_schedule("hourly"),
            lambda s: s.next_fire_times[0] > start + timedelta(hours=4.5),
        )
        fires = [f async for f in client.schedule_fires("hourly")]
    assert (after.started_count, after.missed_count) == (len(started), missed)
    ran = sorted((f.fire_time - start) / timedelta(hours=1) for f in fires if f.task_id)  # type: ignore[operator]
    assert ran == [h - 0.5 for h in started]
    if missed:
        (record,) = [f for f in fires if f.result == "missed"]
        assert record.fire_time == start and record.missed_count == missed

    # Restarting again, even later within the same hour, fires nothing twice.
    await restart(broker, monkeypatch, hours=5.2)
    async with Client(broker.target) as client:
        await client.create_schedule("witness", TaskSpec("echo"), cron="* * * * * *")
        await eventually(lambda: client.get_schedule("witness"), lambda s: s.started_count > 0)
        final = await client.get_schedule("hourly")
    assert (final.started_count, final.missed_count) == (len(started), missed)


async def test_a_paused_schedule_fires_nothing_and_resumes_from_now(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(broker.target) as client:
        await client.create_schedule("p", TaskSpec("echo"), every=60, overlap="allow_all")
        paused = await client.pause_schedule("p", note="maintenance")
    assert (paused.state, paused.pause_note, paused.next_fire_times) == (
        "paused",
        "maintenance",
        [],
    )
    await restart(broker, monkeypatch, hours=2)  # 120 fire times pass while paused
    async with Client(broker.target) as client:
        # A schedule that fires proves the ticker ran past the paused one's fire times.
        await client.create_schedule("witness", TaskSpec("echo"), cron="* * * * * *")
        await eventually(lambda: client.get_schedule("witness"), lambda s: s.started_count > 0)
        still = await client.get_schedule("p")
        assert (still.started_count, still.missed_count) == (0, 0)
        resumed = await client.resume_schedule("p")
        assert resumed.state == "active" and resumed.pause_note == ""
        now = datetime.now(UTC) + timedelta(hours=2)
        assert now - timedelta(seconds=5) < resumed.next_fire_times[0] <= now + timedelta(minutes=1)
        assert resumed.missed_count == 0  # paused-over fire times are neither run nor missed


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "allow_all"])
async def test_overlap_policies_with_tasks_slower_than_the_schedule(
    broker: Broker, client: Client, tmp_path: Path, overlap: str
) -> None:
    worker = await start_worker(broker, tmp_path, name="slow", concurrency=8)
    await client.create_schedule(
        "slow", TaskSpec("sleep", {"seconds": 2.2}), cron="* * * * * *", overlap=overlap
    )
    done = await eventually(
        lambda: client.get_schedule("slow"),
        lambda s: s.started_count + s.skipped_count >= 6 and s.started_count >= 2,
        timeout=30,
    )
    await client.pause_schedule("slow")
    fires = [f async for f in client.schedule_fires("slow")]
    await worker.stop()
    peak = max(int(line[4]) for line in read_record(tmp_path) if line[0] == "start")
    if overlap == "allow_all":
        assert peak >= 2 and done.skipped_count == 0
        return
    assert peak == 1 and done.skipped_count >= 1
    if overlap == "buffer_one":
        # A buffered fire ran later than its fire time, once the previous run ended.
        waited = []
        for f in fires:
            if f.result == "started" and f.task_id:
                task = await client.get(f.task_id)
                assert task.create_time is not None and f.fire_time is not None
                waited.append(task.create_time - f.fire_time)
        assert max(waited) > timedelta(seconds=0.5)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


YAML = """
schedules:
  - name: report
    cron: "30 2 * * *"
    time_zone: Europe/Berlin
    catchup: all
    catchup_limit: 5
    task: {type: echo, queue: reports, payload: {format: pdf}, labels: {team: data}}
  - name: heartbeat
    every: 15m
    overlap: allow_all
    task:
      type: echo
      retry: {max_attempts: 2, initial_backoff: 1s}
      timeouts: {execution: 10s}
"""


async def test_a_schedules_file_is_reconciled_idempotently(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path / "schedules.yaml", YAML)
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=["--schedules", str(path)])
    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line("schedules file: 2 created, 0 updated, 0 unchanged")
    async with Client(broker.target) as client:
        report = await client.get_schedule("report")
        assert (report.catchup, report.catchup_limit, report.task.queue) == ("all", 5, "reports")
        assert report.task.payload == {"format": "pdf"} and report.task.labels == {"team": "data"}
    await broker.stop()

    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line("schedules file: 0 created, 0 updated, 2 unchanged")
    await broker.stop()

    write(path, YAML.replace("every: 15m", "every: 5m"))
    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line("schedules file: 0 created, 1 updated, 1 unchanged")
    async with Client(broker.target) as client:
        assert (await client.get_schedule("heartbeat")).every == 300
        assert len([s async for s in client.list_schedules()]) == 2
    await broker.stop()


async def test_a_bad_schedules_entry_stops_the_start_naming_it(db_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path / "schedules.toml",
        '[[schedules]]\nname = "ok"\nevery = "1h"\ntask = {type = "echo"}\n\n'
        '[[schedules]]\nname = "broken"\ncron = "0 0 * * eightday"\ntask = {type = "echo"}\n',
    )
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=["--schedules", str(path)])
    with pytest.raises(RuntimeError, match="exited"):
        await broker.start()
    log = (tmp_path / "broker.log").read_text()
    assert "schedules[1] (broken)" in log and "day-of-week field" in log


async def test_the_schedule_commands_drive_a_schedule_from_a_shell(broker: Broker) -> None:
    code, out, err = await taskyard(
        "schedule", "create", "nightly", "echo", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
        "--payload", '{"v": 1}', "--overlap", "allow_all", "--json", target=broker.target,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["state"] == "active"
    code, out, _ = await taskyard(
        "schedule", "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
        "--after", "2026-10-24T12:00:00+00:00", "-n", "2", "--json", target=broker.target,
    )  # fmt: skip
    assert json.loads(out) == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    code, out, _ = await taskyard("schedule", "run", "nightly", "--json", target=broker.target)
    task_id = json.loads(out)["id"]
    code, out, _ = await taskyard(
        "schedule", "pause", "nightly", "--note", "x", target=broker.target
    )
    assert code == 0 and "paused" in out
    code, out, _ = await taskyard("schedule", "list", target=broker.target)
    assert "nightly" in out and "paused" in out
    code, out, _ = await taskyard(
        "schedule", "update", "nightly", "--every", "1h", "--payload", '{"v": 2}', "--json",
        target=broker.target,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["trigger"] == "every 3600s"
    code, out, _ = await taskyard("schedule", "resume", "nightly", target=broker.target)
    assert "active" in out
    code, out, _ = await taskyard("schedule", "get", "nightly", "--json", target=broker.target)
    shown = json.loads(out)
    assert shown["history"][0]["task_id"] == task_id and shown["history"][0]["manual"]
    code, _, _ = await taskyard("schedule", "delete", "nightly", target=broker.target)
    assert code == 0
    code, _, err = await taskyard("schedule", "get", "nightly", target=broker.target)
    assert code == 1 and "SCHEDULE_NOT_FOUND" in err
