"""`make screenshots`: one picture of each dashboard page, for docs/img/.

Starts a broker (SQLite, in a temporary directory) and the test workers, gives
them a little of everything (queues of several sizes, a running task with
progress and logs, failures and dead letters, a paused queue, schedules), then
photographs each page in headless Chromium at 1280 by 900. Not a test: the
browser tests (tests/web/test_*.py) check the behaviour; this keeps the
pictures in the docs current.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright, expect

from tests.helpers import Broker, WorkerProcess, start_worker
from tests.web.conftest import CHROMIUM
from worker_sdk import Client, TaskSpec, TaskState, Workflow


async def _scene(broker: Broker, workdir: Path, workers: list[WorkerProcess]) -> dict[str, str]:
    workers.append(
        await start_worker(broker, workdir, name="worker-1", concurrency=8, queues="default,emails")
    )
    workers.append(await start_worker(broker, workdir, name="worker-2", queues="reports"))
    async with Client(broker.target) as client:
        await client.create_queue("emails", max_concurrency=20, rate_limit=(50, 1))
        await client.create_queue("reports", max_concurrency=2)
        done = await client.submit_many(
            TaskSpec(
                "echo", {"to": f"u{i}@example.com"}, queue="emails", labels={"campaign": "dec"}
            )
            for i in range(40)
        )
        dead = await client.submit_many(
            TaskSpec("fail", {"order": i}, queue="default", max_attempts=2) for i in range(3)
        )
        for task in [*done, *dead]:
            async for seen in client.watch(task.id):
                if seen.done:
                    break
        await client.submit_many(TaskSpec("echo", queue="backfill") for _ in range(25))
        await client.pause_queue("backfill", "waiting for the migration")
        running = await client.submit(
            "progress", {"steps": 40, "pause": 1.0}, queue="reports", labels={"report": "q4"}
        )
        async for seen in client.watch(running.id):
            if seen.state is TaskState.RUNNING and seen.progress is not None:
                break
        await client.create_schedule(
            "nightly-report", TaskSpec("echo", {"kind": "nightly"}, queue="reports"),
            cron="0 2 * * *", time_zone="Europe/Paris", description="the daily sales report",
        )  # fmt: skip
        await client.create_schedule(
            "cleanup", TaskSpec("echo", queue="default"), every=900, time_zone="America/New_York"
        )
        await client.run_schedule("nightly-report")
        flow = await _workflow(client, broker, workdir, workers)
        return {"running": running.id, "dead": dead[0].id, "workflow": flow}


async def _workflow(
    client: Client, broker: Broker, workdir: Path, workers: list[WorkerProcess]
) -> str:
    """A workflow half-way: finished nodes, a running one, blocked ones behind it."""
    workers.append(
        await start_worker(broker, workdir, name="wf-worker", app="tests.workflow_workers:worker")
    )
    wf = Workflow("nightly-etl")
    extract = wf.node("extract", "wf.noop")
    parts = [wf.node(f"transform-{r}", "wf.noop", after=[extract]) for r in ("eu", "us")]
    slow = wf.node("transform-apac", "wf.slow", {"seconds": 600}, after=[extract])
    load = wf.node("load", "wf.noop", after=[*parts, slow])
    wf.node("report", "wf.noop", after=[load])
    wf.node("notify", "wf.noop", after=[load], trigger_rule="all_finished")
    created = await client.create_workflow(wf)
    async for seen in client.watch(created.node("transform-apac").task_id):
        if seen.state is TaskState.RUNNING:
            break
    for name in ("transform-eu", "transform-us"):
        await client.wait(created.node(name).task_id, timeout=60)
    return created.id


async def shoot(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="taskyard-shots-") as tmp:
        workdir = Path(tmp)
        broker = Broker(
            db_url=f"sqlite+aiosqlite:///{workdir / 'taskyard.db'}",
            workdir=workdir,
            extra_args=["--http-listen", "127.0.0.1:0"],
        )
        await broker.start()
        workers: list[WorkerProcess] = []
        try:
            ids = await _scene(broker, workdir, workers)
            base = f"http://127.0.0.1:{broker.http_port}/"
            pages = {
                "overview": "",
                "tasks": "tasks",
                "task": f"tasks/{ids['running']}",
                "dead-letters": "dead",
                "schedules": "schedules",
                "workers": "workers",
                "workflows": "workflows",
                "workflow": f"workflows/{ids['workflow']}",
            }
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                for name, route in pages.items():
                    await page.goto(f"{base}#/{route}")
                    await expect(page.get_by_test_id("live-status")).to_have_attribute(
                        "data-status", "live", timeout=20_000
                    )
                    if name == "schedules":
                        await page.get_by_role("button", name="nightly-report").click()
                    await page.wait_for_timeout(1500)  # let the charts and live figures settle
                    await page.screenshot(path=str(out / f"dashboard-{name}.png"))
                    sys.stderr.write(f"{out / f'dashboard-{name}.png'}\n")
                await browser.close()
        finally:
            for worker in workers:
                await worker.kill()
            await broker.stop()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(target))
