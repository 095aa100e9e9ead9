"""A full disk is STORAGE_FULL, shown in health and metrics, and passes without a restart.

SQLite's size cap (`--sqlite-max-bytes`, PRAGMA max_page_count) makes the database
answer SQLITE_FULL exactly as a full disk does, without filling one. PostgreSQL's
equivalents are in test_storage_postgres.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import Broker
from tests.telemetry.test_metrics import metrics_port, scrape, value
from worker_sdk import Client, TaskState, TaskyardError

BIG = {"blob": "x" * 50_000}

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def broker_args() -> list[str]:
    # About 3 MB: the schema takes a few hundred kB, then some fifty 50 kB tasks fit.
    return ["--sqlite-max-bytes", "3000000", "--metrics-listen", "127.0.0.1:0"]


async def health_becomes(broker: Broker, status: int) -> None:
    """Follow Health.Watch until the broker reports `status` (it changes asynchronously)."""
    async with broker.channel() as channel, asyncio.timeout(30):
        stub = health_pb2_grpc.HealthStub(channel)
        async for answer in stub.Watch(health_pb2.HealthCheckRequest()):
            if answer.status == status:
                return


async def test_a_full_database_is_storage_full_in_status_health_and_metrics_until_freed(
    broker: Broker, client: Client
) -> None:
    port = await metrics_port(broker)
    accepted = []
    with pytest.raises(TaskyardError) as info:
        for _ in range(200):  # 10 MB in all: the cap is reached well before
            accepted.append(await client.submit("echo", BIG))
    error = info.value
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    assert error.retry_after is not None and error.retry_after > 0
    assert 10 < len(accepted) < 200
    await health_becomes(broker, health_pb2.HealthCheckResponse.NOT_SERVING)
    samples = await scrape(port)
    assert value(samples, "taskyard_storage_refusing", reason="STORAGE_FULL") == 1
    assert value(samples, "taskyard_storage_refusals_total", reason="STORAGE_FULL") >= 1
    # What was acknowledged is there, intact.
    for task in accepted[:3]:
        assert (await client.get(task.id)).payload == BIG

    # An operator frees space (no restart): cancel the backlog and purge it.
    for task in accepted:
        await client.cancel(task.id)
    assert await client.purge(states=[TaskState.CANCELLED]) == len(accepted)
    again = await client.submit("echo", BIG)
    assert (await client.get(again.id)).state is TaskState.PENDING
    await health_becomes(broker, health_pb2.HealthCheckResponse.SERVING)
    samples = await scrape(port)
    assert value(samples, "taskyard_storage_refusing", reason="STORAGE_FULL") == 0
