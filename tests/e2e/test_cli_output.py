"""Output meant for people: no Python reprs, commands instead of RPC names, honest counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli import taskyard
from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskFailed

REPR = re.compile(r"\(\d|\{'|\bTrue\b|\bFalse\b|\bNone\b|\(\)")


async def test_queue_get_reads_as_text_not_python_reprs(broker: Broker) -> None:
    t = broker.target
    created = await taskyard(
        "queue", "create", "mail", "--rate", "5/1s", "--backoff", "exponential:1s:2:5m",
        "--execution-timeout", "5m", target=t,
    )  # fmt: skip
    assert created.code == 0, created.err
    await taskyard("queue", "pause", "mail", "--note", "until the relay is back", target=t)
    run = await taskyard("queue", "get", "mail", target=t)
    assert run.code == 0
    assert not REPR.search(run.out), run.out
    for shown in (
        "state: paused — until the relay is back",
        "rate_limit: 5 per 1s",
        "exponential backoff 1s x2 up to 5m",
        "timeouts: execution 5m",
    ):
        assert shown in run.out, run.out
    data = json.loads((await taskyard("queue", "get", "mail", "--json", target=t)).out)
    assert data["rate_limit"] == {"limit": 5, "per_seconds": 1.0}
    assert data["paused"] is True


async def test_broker_messages_name_commands_not_rpcs(broker: Broker) -> None:
    t = broker.target
    await taskyard("queue", "create", "mail", target=t)
    run = await taskyard("queue", "create", "mail", target=t)
    assert run.code == 1
    assert "`taskyard queue update`" in run.err and "UpdateQueue" not in run.err, run.err
    await taskyard("schedule", "create", "nightly", "echo", "--cron", "@daily", target=t)
    run = await taskyard("schedule", "create", "nightly", "echo", "--cron", "@daily", target=t)
    assert "`taskyard schedule update`" in run.err and "UpdateSchedule" not in run.err, run.err
    run = await taskyard("schedule", "get", "missing", target=t)
    assert "`taskyard schedule list`" in run.err and "ListSchedules" not in run.err, run.err


async def test_schedule_preview_shows_the_zones_local_time(broker: Broker) -> None:
    run = await taskyard(
        "schedule", "preview", "--cron", "0 9 * * *", "--tz", "Asia/Shanghai", "-n", "2",
        target=broker.target,
    )  # fmt: skip
    lines = run.out.splitlines()
    assert len(lines) == 2, run.out
    # 09:00 in Shanghai (UTC+8, no DST) is 01:00 UTC: both are shown, the zone's first.
    assert all(re.fullmatch(r"\S+ 09:00:00 CST  \(\S+ 01:00:00 UTC\)", line) for line in lines)


async def test_schedule_list_is_aligned_and_get_shows_the_payload(broker: Broker) -> None:
    t = broker.target
    for args in (
        ["every-minute", "echo", "--every", "1m"],
        ["once", "echo", "--at", "+1h"],  # one-shot: its fire time has microseconds
        ["a-much-longer-schedule-name", "echo", "--cron", "0 9 * * *", "--tz", "Europe/Paris"],
    ):
        assert (await taskyard("schedule", "create", *args, target=t)).code == 0
    await taskyard("schedule", "update", "once", "--payload", '{"to": "a@example.com"}', target=t)
    run = await taskyard("schedule", "list", target=t)
    header, *rows = run.out.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", header)]
    assert len(rows) == 3 and len(starts) == 4, run.out
    for row in rows:
        for start in starts:  # every column starts at its header's offset
            assert row[start - 1] == " " and row[start] != " ", (row, start)
    run = await taskyard("schedule", "get", "once", target=t)
    assert '"payload": {"to": "a@example.com"}' in run.out, run.out


async def test_stats_counts_cancelled_says_never_ran_and_shows_paused_queues(
    broker: Broker,
) -> None:
    t = broker.target
    cancelled = (await taskyard("submit", "echo", target=t)).out.strip()
    await taskyard("cancel", cancelled, target=t)
    await taskyard("submit", "echo", "-q", "held", target=t)
    await taskyard("queue", "create", "held", target=t)
    await taskyard("queue", "pause", "held", target=t)
    run = await taskyard("stats", target=t)
    assert run.code == 0
    assert "1 cancelled" in run.out, run.out
    assert "0.0 ms" not in run.out and "never ran" in run.out, run.out
    assert re.search(r"^held\s+paused\s+1\b", run.out, re.MULTILINE), run.out
    assert "queue 'held' is paused" in run.out


async def test_the_worker_log_never_shows_more_attempts_than_allowed(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    """After RetryTask the attempt numbers go on (2), and so does the last attempt's number."""
    worker = await start_worker(broker, tmp_path, name="w")
    task = await client.submit("fail", max_attempts=1)
    with pytest.raises(TaskFailed):
        await client.wait(task.id, timeout=30)
    await client.retry(task.id)
    with pytest.raises(TaskFailed):
        await client.wait(task.id, timeout=30)
    # Attempt 2 after RetryTask is the last one of its fresh budget: "2 of 2", not "2/1".
    await worker.process.wait_for_line(r"failed on attempt 2 of 2: ValueError")
    log = (tmp_path / "w.log").read_text()
    assert not re.search(r"attempt \d+/\d+", log), log
    assert "failed on attempt 1 of 1: ValueError" in log
    assert "(no attempts left)" in log
    await worker.stop()
