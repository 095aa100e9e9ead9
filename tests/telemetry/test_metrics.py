"""The Prometheus endpoint of a real broker, scraped over HTTP after a known workload.

Every count below is arithmetic on the workload, not a snapshot of what the
broker happened to say; a metric that is missing reads as 0 and fails.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Broker, start_worker
from worker_sdk import Client, RetryPolicy, TaskFailed, TaskSpec, TaskState, Timeouts

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, jitter=0)


@pytest.fixture
def broker_args() -> list[str]:
    return ["--metrics-listen", "127.0.0.1:0"]


async def metrics_port(broker: Broker) -> int:
    assert broker.process is not None
    match = await broker.process.wait_for_line(r"metrics on http://[^:]+:(\d+)/metrics")
    return int(match.group(1))


async def scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.status == 200
            return str(r.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def wait_state(client: Client, task_id: str, state: TaskState) -> None:
    async with asyncio.timeout(30):
        async for task in client.watch(task_id):
            if task.state is state:
                return


async def test_task_counters_histograms_and_gauges_match_the_workload(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    port = await metrics_port(broker)
    worker = await start_worker(broker, tmp_path, name="main", concurrency=4)
    echo = [await client.submit("echo", {"n": i}) for i in range(5)]
    # Two retryable failures, two attempts each; one permanent failure, one attempt.
    fail = [await client.submit("fail", retry_policy=FAST_RETRY) for _ in range(2)]
    fail.append(await client.submit("fail", {"permanent": True}, retry_policy=FAST_RETRY))
    sleep = await client.submit("sleep", {"seconds": 0.3})
    later = [await client.submit("echo", delay=3600) for _ in range(2)]
    await client.cancel(later[0].id)
    # Nobody serves "nobody": the task expires unrun.
    expiring = await client.submit("echo", queue="nobody", timeouts=Timeouts(expiry=0.2))
    for t in [*echo, sleep]:
        await client.wait(t.id, timeout=30)
    for t in [*fail, expiring]:
        with pytest.raises(TaskFailed):
            await client.wait(t.id, timeout=30)

    # A lease lost to a worker that stopped heartbeating (SIGSTOP): it expires.
    # Concurrency 1: the stopped worker has no credit left to be leased the task again.
    hung = await start_worker(broker, tmp_path, name="hung", queues="hangq", concurrency=1)
    hang = await client.submit("hang.first", queue="hangq", timeouts=Timeouts(heartbeat=1.0))
    await wait_state(client, hang.id, TaskState.RUNNING)
    await hung.process.signal(signal.SIGSTOP)
    await wait_state(client, hang.id, TaskState.PENDING)
    await hung.kill()
    assert broker.process is not None
    await broker.process.wait_for_line("worker hung disconnected")

    m = await scrape(port)
    # Submitted: 5 echo + 2 delayed echo; 3 fail; 1 sleep; 1 expiring echo; 1 hang.
    assert value(m, "taskyard_tasks_submitted_total", queue="default", type="echo") == 7
    assert value(m, "taskyard_tasks_submitted_total", queue="default", type="fail") == 3
    assert value(m, "taskyard_tasks_submitted_total", queue="default", type="sleep") == 1
    # No worker serves "nobody" and nobody created it: it counts under _other.
    assert value(m, "taskyard_tasks_submitted_total", queue="_other", type="echo") == 1
    assert value(m, "taskyard_tasks_submitted_total", queue="nobody", type="echo") == 0
    # Started: fail runs 2 + 2 + 1 = 5 attempts.
    assert value(m, "taskyard_tasks_started_total", queue="default", type="echo") == 5
    assert value(m, "taskyard_tasks_started_total", queue="default", type="fail") == 5
    assert value(m, "taskyard_tasks_started_total", queue="hangq", type="hang.first") == 1
    assert value(m, "taskyard_tasks_succeeded_total", queue="default", type="echo") == 5
    assert value(m, "taskyard_tasks_succeeded_total", queue="default", type="sleep") == 1
    assert value(m, "taskyard_tasks_retried_total", queue="default", type="fail") == 2
    assert value(m, "taskyard_tasks_failed_total", queue="default", type="fail") == 3
    assert value(m, "taskyard_tasks_cancelled_total", queue="default", type="echo") == 1
    assert value(m, "taskyard_tasks_expired_total", queue="_other", type="echo") == 1
    assert value(m, "taskyard_leases_lost_total", queue="hangq", type="hang.first") == 1
    assert value(m, "taskyard_leases_expired_total") == 1

    # Run time: one observation per attempt that ended with an outcome.
    run = "taskyard_task_run_time_seconds"
    assert value(m, f"{run}_count", queue="default", type="echo") == 5
    assert value(m, f"{run}_count", queue="default", type="fail") == 5  # 2 retried + 3 failed
    assert value(m, f"{run}_count", queue="default", type="sleep") == 1
    assert value(m, f"{run}_sum", queue="default", type="sleep") >= 0.3
    assert value(m, f"{run}_bucket", queue="default", type="sleep", le="0.25") == 0
    assert value(m, f"{run}_bucket", queue="default", type="sleep", le="+Inf") == 1
    # Queue wait: one observation per start.
    wait = "taskyard_task_queue_wait_seconds"
    assert value(m, f"{wait}_count", queue="default", type="echo") == 5
    assert value(m, f"{wait}_count", queue="default", type="fail") == 5
    assert value(m, f"{wait}_bucket", queue="default", type="fail", le="+Inf") == 5

    # Gauges: the delayed echo left waiting, the hang task back to pending.
    assert value(m, "taskyard_queue_depth", queue="default", state="scheduled") == 1
    assert value(m, "taskyard_queue_depth", queue="default", state="pending") == 0
    assert value(m, "taskyard_queue_depth", queue="hangq", state="pending") == 1
    assert value(m, "taskyard_queue_running", queue="default") == 0
    assert value(m, "taskyard_leases_in_flight") == 0
    assert value(m, "taskyard_workers_connected") == 1
    await worker.stop()


async def test_running_tasks_show_as_leases_in_flight_and_running(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    port = await metrics_port(broker)
    worker = await start_worker(broker, tmp_path, name="main", concurrency=4)
    slow = [await client.submit("slow", {"seconds": 60}) for _ in range(3)]
    for t in slow:
        await wait_state(client, t.id, TaskState.RUNNING)
    m = await scrape(port)
    assert value(m, "taskyard_leases_in_flight") == 3
    assert value(m, "taskyard_queue_running", queue="default") == 3
    assert value(m, "taskyard_workers_connected") == 1
    for t in slow:
        await client.cancel(t.id)
    await worker.stop()


@pytest.mark.parametrize("max_instances", [1, 3])
async def test_schedule_fires_and_skips_match_the_schedules_own_counts(
    broker: Broker, client: Client, max_instances: int
) -> None:
    port = await metrics_port(broker)
    # Every second; nobody serves the queue, so no run ever finishes: the first
    # `max_instances` fires start, and overlap=skip skips every later one.
    await client.create_schedule(
        "skipper",
        TaskSpec("echo", queue="unserved"),
        cron="* * * * * *",
        overlap="skip",
        max_instances=max_instances,
    )
    # Fire times pass on the broker's clock: poll the schedule (no event to await).
    async with asyncio.timeout(30):
        while True:
            if (await client.get_schedule("skipper")).skipped_count >= 2:
                break
            await asyncio.sleep(0.2)
    # Pausing goes through the committer after any fire planned before it, so
    # the counts are final once it returns.
    await client.pause_schedule("skipper")
    final = await client.get_schedule("skipper")
    assert final.started_count == max_instances and final.missed_count == 0
    assert final.skipped_count >= 2 and final.running_count == max_instances

    m = await scrape(port)
    assert value(m, "taskyard_schedule_fires_total", schedule="skipper") == max_instances
    skipped = value(m, "taskyard_schedule_misses_total", schedule="skipper", reason="skipped")
    assert skipped == final.skipped_count
    assert value(m, "taskyard_schedule_lag_seconds_count", schedule="skipper") == max_instances


async def test_the_broker_freezes_what_start_up_left_alive(broker: Broker) -> None:
    """Full collections never walk the modules, classes and config (worker_sdk/_collector.py)."""
    assert broker.process is not None
    line = await broker.process.wait_for_line(r"froze (\d+) objects start-up left alive")
    assert int(line.group(1)) > 10_000
    port = await metrics_port(broker)
    # And the collector's own figures are on /metrics.
    m = await scrape(port)
    assert value(m, "python_gc_collections_total", generation="0") > 0
