"""When no connected worker serves a task (or its queue is paused), the CLI says so.

The hint comes from the broker's worker registry (ListWorkers) and queue settings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.cli import TASKYARD, taskyard
from tests.helpers import ROOT, Broker, python_env, start_worker
from worker_sdk import Client


async def test_submit_wait_says_no_worker_takes_the_queue(broker: Broker) -> None:
    run = await taskyard(
        "submit", "echo", "-q", "nobody-listens", "--wait", "--timeout", "2", target=broker.target
    )
    assert run.code == 1
    note, error = run.err_lines
    assert note.startswith("note: task ") and "is pending" in note
    assert "no connected worker takes tasks from queue 'nobody-listens'" in note
    assert error.startswith("error: task ") and "did not finish within 2s; it is pending" in error


async def test_an_unknown_type_is_named_while_its_queue_has_workers(
    broker: Broker, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w")
    run = await taskyard("submit", "nosuchtype", "--wait", "--timeout", "2", target=broker.target)
    assert run.code == 1
    assert "no connected worker handles type 'nosuchtype'" in run.err_lines[0], run.err
    served = await taskyard("submit", "echo", "--wait", target=broker.target)
    assert served.code == 0 and "note:" not in served.err, served.err
    await worker.stop()


async def test_get_and_stats_say_so_and_a_paused_queue_is_named(
    broker: Broker, client: Client
) -> None:
    t = broker.target
    task = await client.submit("echo", queue="nobody-listens")
    run = await taskyard("get", task.id, target=t)
    assert run.code == 0 and "no connected worker takes tasks from queue" in run.err
    await client.create_queue("held")
    await client.pause_queue("held")
    held = await client.submit("echo", queue="held")
    run = await taskyard("get", held.id, target=t)
    assert "queue 'held' is paused; `taskyard queue resume held`" in run.err, run.err
    run = await taskyard("stats", target=t)
    notes = [line for line in run.out.splitlines() if line.startswith("note: ")]
    assert any("'nobody-listens'" in n and "no connected worker" in n for n in notes), run.out
    assert any("queue 'held' is paused" in n for n in notes), run.out


async def test_watch_says_so_while_it_waits(broker: Broker, client: Client) -> None:
    task = await client.submit("echo", queue="nobody-listens")
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "watch", task.id, "--target", broker.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=python_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            note = (await proc.stderr.readline()).decode()
        assert note.startswith("note: ") and "no connected worker" in note, note
        await client.cancel(task.id)  # the watch ends with the task
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert out.decode().splitlines()[-1].startswith("cancelled") and proc.returncode == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
