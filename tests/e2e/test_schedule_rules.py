"""Recurrence rules, exclusions, jitter and max_instances through a real broker and workers.

The calendar arithmetic is simulated over years in tests/unit/test_schedule_rules.py;
here the same features go through the API, the SDK, the CLI and the schedules file,
on both backends. Fires are commits, not events to subscribe to, so the waits poll
the schedule (`eventually`, under a deadline).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from tests.cli import taskyard
from tests.e2e.test_schedules import eventually, expect_error, write
from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, Schedule, TaskSpec

LAST_FRIDAY = "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17;BYMINUTE=0"
AUTUMN = datetime(2026, 10, 1, tzinfo=UTC)


def utc(times: list[datetime]) -> list[str]:
    return [t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for t in times]


async def test_a_recurrence_rule_with_exclusions_is_previewed_saved_and_changed(
    client: Client,
) -> None:
    # The last Friday of each month at 17:00 in Berlin (16:00Z in winter); the one in
    # December 2026 is Christmas Day, excluded.
    options = {"rrule": LAST_FRIDAY, "time_zone": "Europe/Berlin"}
    unsaved = await client.preview_schedule(
        count=3, after=AUTUMN, exclusions=[date(2026, 12, 25)], **options
    )
    assert utc(unsaved) == ["2026-10-30 16:00", "2026-11-27 16:00", "2027-01-29 16:00"]

    created = await client.create_schedule(
        "payroll",
        TaskSpec("echo"),
        exclusions=[("2026-12-24", "2026-12-26")],
        max_instances=2,
        **options,
    )
    assert created.rrule == LAST_FRIDAY and created.max_instances == 2
    assert created.exclusions == [(date(2026, 12, 24), date(2026, 12, 26))]
    assert all(t.astimezone(UTC).date() != date(2026, 12, 25) for t in created.next_fire_times)
    saved = await client.preview_schedule("payroll", count=3, after=AUTUMN)
    assert saved == unsaved

    cleared = await client.update_schedule("payroll", exclusions=[])
    assert cleared.exclusions == [] and cleared.rrule == LAST_FRIDAY
    again = await client.preview_schedule("payroll", count=3, after=AUTUMN)
    assert utc(again)[2] == "2026-12-25 16:00"


async def test_bad_rules_exclusions_and_caps_are_refused_with_reasons(client: Client) -> None:
    task, invalid = TaskSpec("echo"), grpc.StatusCode.INVALID_ARGUMENT
    for options in (
        {"rrule": "FREQ=DAILY;BYHOUR=25"},
        {"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"},
        {"rrule": "FREQ=DAILY", "exclusions": [("2026-12-26", "2026-12-24")]},
        {"rrule": "FREQ=DAILY", "exclusions": ["26.12.2026"]},
        {"at": datetime(2030, 1, 1, 12, tzinfo=UTC), "exclusions": [date(2030, 1, 1)]},
    ):
        await expect_error(
            client.create_schedule("x", task, **options), invalid, "INVALID_SCHEDULE_SPEC"
        )
    await expect_error(
        client.create_schedule("x", task, every=60, overlap="allow_all", max_instances=2),
        invalid,
        "INVALID_SCHEDULE_POLICY",
    )
    await expect_error(
        client.create_schedule("x", task, every=60, max_instances=1001),
        invalid,
        "INVALID_SCHEDULE_POLICY",
    )
    assert [s async for s in client.list_schedules()] == []


async def test_jitter_delays_each_task_and_the_record_keeps_nominal_and_actual_times(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=8)
    jitter = timedelta(seconds=0.8)
    await client.create_schedule(
        "spread", TaskSpec("record"), rrule="FREQ=SECONDLY", jitter=jitter, overlap="allow_all"
    )
    await eventually(
        lambda: client.get_schedule("spread"), lambda s: s.started_count >= 6, timeout=30
    )
    await client.pause_schedule("spread")
    fires = [f async for f in client.schedule_fires("spread") if f.result == "started"]
    delays = []
    for f in fires:
        assert f.fire_time is not None and f.run_time is not None and f.record_time is not None
        # Due at the fire time (or when it was planned, if later) plus the jitter.
        delay = f.run_time - max(f.fire_time, f.record_time)
        assert timedelta(0) <= delay < jitter, (f.fire_time, f.run_time, f.record_time)
        delays.append(delay)
        task = await client.get(f.task_id)
        assert task.run_time == f.run_time
        assert task.labels["taskyard.fire_time"].startswith(
            f.fire_time.strftime("%Y-%m-%dT%H:%M:%S")
        )
    assert len(set(delays)) > 1  # spread, not one fixed offset
    for f in fires:
        await client.wait(f.task_id, timeout=20)
    await worker.stop()
    started_at = {line[1]: float(line[4]) for line in read_record(tmp_path) if line[0] == "run"}
    for f in fires:
        assert f.run_time is not None
        assert started_at[f.task_id] >= f.run_time.timestamp()  # not before it was due


@pytest.mark.parametrize("overlap", ["skip", "buffer_one"])
async def test_max_instances_lets_that_many_slow_runs_overlap_and_no_more(
    broker: Broker, client: Client, tmp_path: Path, overlap: str
) -> None:
    # Every second, each run sleeps 3.5 s, at most 2 unfinished at once.
    worker = await start_worker(broker, tmp_path, name="slow", concurrency=8)
    await client.create_schedule(
        "slow",
        TaskSpec("sleep", {"seconds": 3.5}),
        cron="* * * * * *",
        overlap=overlap,
        max_instances=2,
    )
    seen_running: list[int] = []

    async def check() -> Schedule:
        schedule = await client.get_schedule("slow")
        seen_running.append(schedule.running_count)
        return schedule

    done = await eventually(
        check,
        lambda s: s.started_count >= 4 and s.skipped_count >= 2,
        timeout=60,
    )
    await client.pause_schedule("slow")
    fires = [f async for f in client.schedule_fires("slow")]
    for f in fires:
        if f.task_id:
            await client.wait(f.task_id, timeout=30)
    await worker.stop()
    peak = max(int(line[4]) for line in read_record(tmp_path) if line[0] == "start")
    assert peak == 2 and max(seen_running) <= 2
    skipped = [f for f in fires if f.result == "skipped"]
    assert len(skipped) == done.skipped_count >= 2
    assert all(f.message == "2 earlier run(s) unfinished; max_instances is 2" for f in skipped)
    if overlap == "buffer_one":
        # A buffered fire ran later than its fire time, once a run had finished.
        late = [f.run_time - f.fire_time for f in fires if f.run_time and f.fire_time]
        assert max(late) > timedelta(seconds=0.5)


YAML = """
schedules:
  - name: payroll
    rrule: "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17;BYMINUTE=0"
    time_zone: Europe/Berlin
    exclude: [2026-12-25, "2027-12-24..2027-12-31"]
    max_instances: 3
    jitter: 30s
    task: {type: echo, retry: {retryable_error_types: [HTTP_503], max_attempts: 4}}
"""


async def test_the_schedules_file_takes_rules_exclusions_and_caps(
    db_url: str, tmp_path: Path
) -> None:
    path = write(tmp_path / "schedules.yaml", YAML)
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=["--schedules", str(path)])
    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line("schedules file: 1 created, 0 updated, 0 unchanged")
    async with Client(broker.target) as client:
        payroll = await client.get_schedule("payroll")
        assert payroll.rrule == "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17;BYMINUTE=0"
        assert payroll.exclusions == [
            (date(2026, 12, 25), date(2026, 12, 25)),
            (date(2027, 12, 24), date(2027, 12, 31)),
        ]
        assert (payroll.max_instances, payroll.jitter) == (3, 30.0)
        assert payroll.task.retry_policy is not None
        assert payroll.task.retry_policy.retryable_error_types == ("HTTP_503",)
    await broker.stop()

    write(path, YAML.replace("2027-12-24..2027-12-31", "2027-12-31..2027-12-24"))
    with pytest.raises(RuntimeError, match="exited"):
        await broker.start()
    log = (tmp_path / "broker.log").read_text()
    assert "schedules[0] (payroll)" in log
    assert "spec.exclusions[1].end_date is before its start_date" in log


async def test_the_schedule_commands_take_rules_exclusions_and_caps(broker: Broker) -> None:
    code, out, err = await taskyard(
        "schedule", "preview", "--rrule", LAST_FRIDAY, "--tz", "Europe/Berlin",
        "--exclude", "2026-12-24..2026-12-26", "--after", "2026-10-01T00:00:00Z", "-n", "3",
        "--json", target=broker.target,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [
        "2026-10-30T16:00:00+00:00", "2026-11-27T16:00:00+00:00", "2027-01-29T16:00:00+00:00",
    ]  # fmt: skip
    code, out, err = await taskyard(
        "schedule", "create", "payroll", "echo", "--rrule", LAST_FRIDAY, "--tz", "Europe/Berlin",
        "--exclude", "2026-12-25", "--max-instances", "3", "--retry-on", "HTTP_503", "--json",
        target=broker.target,
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert shown["trigger"] == f"rrule {LAST_FRIDAY!r} (Europe/Berlin)"
    assert shown["exclusions"] == ["2026-12-25"] and shown["policies"]["max_instances"] == 3
    assert "retried only: HTTP_503" in shown["task"]["retry_policy"]
    code, out, err = await taskyard(
        "schedule", "update", "payroll", "--exclude", "none", "--max-instances", "1", "--json",
        target=broker.target,
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert shown["exclusions"] == [] and shown["policies"]["max_instances"] == 1
    code, _, err = await taskyard(
        "schedule", "create", "bad", "echo", "--rrule", "FREQ=SOMETIMES", target=broker.target
    )
    assert code == 1 and "INVALID_SCHEDULE_SPEC" in err
