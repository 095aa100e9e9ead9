"""The dashboard in a real browser, against a real broker and worker, on both backends.

Live updates are awaited (Playwright's `expect` retries until its deadline),
never slept for. Where a test claims a timing (cancel within a second), the
broker's own record is what is measured; the page only has to show it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from playwright.async_api import expect

from taskyard.v1 import stats_service_pb2, stats_service_pb2_grpc
from tests.cli import taskyard
from tests.helpers import Broker, start_worker
from tests.web.conftest import Dashboard
from worker_sdk import Client, TaskSpec, TaskState


async def test_a_task_submitted_from_the_cli_appears_without_a_reload(
    broker: Broker, dashboard: Dashboard
) -> None:
    await dashboard.open("tasks")
    loads = dashboard.navigations
    run = await taskyard("submit", "echo", "--queue", "cli", "-l", "from=cli", target=broker.target)
    assert run.code == 0, run.err
    task_id = run.out.strip()
    row = dashboard.page.get_by_test_id(f"task-{task_id}")
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("from=cli")
    assert dashboard.navigations == loads  # no reload, no navigation: the event stream did it


async def test_the_progress_bar_moves_with_the_workers_reports(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-progress")
    task = await client.submit("progress", {"steps": 4, "pause": 1.5})
    await dashboard.open(f"tasks/{task.id}")
    bar = dashboard.page.get_by_test_id("progress")
    now = "+document.querySelector('[data-testid=progress]')?.getAttribute('aria-valuenow')"
    # Some report between the ends, then a larger one: the bar moved while the page stayed.
    between = f"() => {{ const v = {now}; return v > 0 && v < 100 && v; }}"
    first = await dashboard.page.wait_for_function(between)
    seen = int(await first.json_value())
    await dashboard.page.wait_for_function(f"() => {now} > {seen}")
    await expect(dashboard.page.get_by_test_id("progress-steps")).to_contain_text("of 4")
    await expect(dashboard.page.get_by_test_id("state")).to_have_text("SUCCEEDED")
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    await worker.stop()


async def test_the_cancel_button_cancels_a_running_task_within_a_second(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-cancel")
    task = await client.submit("slow", {"seconds": 60})
    await dashboard.open(f"tasks/{task.id}")
    await expect(dashboard.page.get_by_test_id("state")).to_have_text("RUNNING")
    clicked = time.time()
    await dashboard.page.get_by_test_id("cancel").click()
    await expect(dashboard.page.get_by_test_id("state")).to_have_text("CANCELLED")
    final = await client.get(task.id)
    assert final.state is TaskState.CANCELLED and final.finish_time is not None
    # The broker's own record: the task was cancelled (the worker stopped and said so)
    # within a second of the click, whatever the page took to show it.
    assert final.finish_time.timestamp() - clicked < 1.0, final.finish_time.timestamp() - clicked
    await worker.stop()


async def test_retry_all_on_dead_letters_runs_them_again(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-dead", queues="letters")
    dead = await client.submit_many(
        TaskSpec("fail.first", queue="letters", max_attempts=1) for _ in range(3)
    )
    for task in dead:
        async for seen in client.watch(task.id):
            if seen.done:
                assert seen.state is TaskState.DEAD
                break
    await dashboard.open("dead?queue=letters")
    total = dashboard.page.get_by_test_id("dead-total")
    await expect(total).to_have_text("3 dead in queue letters")
    for task in dead:
        await expect(dashboard.page.get_by_test_id(f"task-{task.id}")).to_be_visible()
    await dashboard.page.get_by_test_id("retry-all").click()
    await dashboard.page.get_by_test_id("retry-all-confirm").click()
    await expect(total).to_have_text("0 dead in queue letters")
    for task in dead:
        async with asyncio.timeout(60):
            async for seen in client.watch(task.id):
                if seen.done:
                    break
        again = await client.get(task.id)
        assert (again.state, again.attempt, again.result) == (
            TaskState.SUCCEEDED,
            2,
            {"attempt": 2},
        )  # it ran again, and this time it worked
    await worker.stop()


async def test_pausing_a_queue_shows_and_takes_effect(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-pause", queues="held,free")
    await client.wait((await client.submit("echo", queue="held")).id, timeout=60)
    await client.wait((await client.submit("echo", queue="free")).id, timeout=60)
    await dashboard.open()
    page = dashboard.page
    await page.get_by_test_id("queue-held-pause").click()
    await expect(page.get_by_test_id("queue-held-paused")).to_have_text("paused")
    assert (await client.get_queue("held")).paused
    waiting = await client.submit("echo", queue="held")
    # Dispatch goes on: a task submitted after it, to a queue the same worker serves, runs;
    # the paused queue's does not.
    await client.wait((await client.submit("echo", queue="free")).id, timeout=60)
    assert (await client.get(waiting.id)).state is TaskState.PENDING
    await expect(page.get_by_test_id("queue-held-depth")).to_have_text("1")
    await page.get_by_test_id("queue-held-resume").click()
    await expect(page.get_by_test_id("queue-held-paused")).to_have_text("active")
    await client.wait(waiting.id, timeout=60)
    await worker.stop()


async def test_the_overview_shows_the_numbers_of_the_stats_rpc(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-stats", queues="alpha,beta")
    ok = await client.submit_many(TaskSpec("echo", i, queue="alpha") for i in range(5))
    bad = await client.submit_many(TaskSpec("fail", queue="beta", max_attempts=1) for _ in range(2))
    for task in [*ok, *bad]:
        async for seen in client.watch(task.id):
            if seen.done:
                break
    await worker.stop()
    await client.submit_many(TaskSpec("echo", queue="gamma") for _ in range(4))  # no worker
    await dashboard.open()
    page = dashboard.page
    await expect(page.get_by_test_id("queue-gamma-depth")).to_have_text("4")
    async with broker.channel() as channel:
        stub = stats_service_pb2_grpc.StatsServiceStub(channel)
        stats = await stub.GetQueueStats(stats_service_pb2.GetQueueStatsRequest())
    assert {q.queue for q in stats.queues} == {"alpha", "beta", "gamma"}
    for q in stats.queues:
        counts: dict[int, int] = {int(c.state): c.count for c in q.counts}
        waiting = sum(counts.get(s, 0) for s in (1, 2, 4))  # scheduled, pending, retrying
        expected = {
            "depth": waiting,
            "running": q.running,
            "succeeded": counts.get(5, 0),
            "failed": counts.get(6, 0),
            "dead": counts.get(8, 0),
            "hour": q.finished_last_hour,
            "paused": "paused" if q.paused else "active",
        }
        for field, value in expected.items():
            await expect(page.get_by_test_id(f"queue-{q.queue}-{field}")).to_have_text(str(value))
    await expect(page.get_by_test_id("workers-count")).to_have_text("0")
    chart = page.get_by_test_id("chart-throughput")
    await expect(chart).to_contain_text("7 finished")
