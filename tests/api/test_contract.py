"""The generated code matches the .proto files, and every RPC is implemented."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from taskyard.v1 import (
    schedule_service_pb2,
    system_service_pb2,
    task_service_pb2,
    worker_service_pb2,
    workflow_service_pb2,
)
from tests.helpers import ROOT, Broker

SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    system_service_pb2.DESCRIPTOR.services_by_name["SystemService"],
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
    workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"],
]


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
            f"--plugin=protoc-gen-mypy={venv_bin / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={venv_bin / 'protoc-gen-mypy_grpc'}",
            *sorted(str(p) for p in (ROOT / "protos/taskyard/v1").glob("*.proto")),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    fresh = tmp_path / "taskyard" / "v1"
    committed = ROOT / "taskyard" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    _, mismatch, missing = filecmp.cmpfiles(fresh, committed, generated, shallow=False)
    assert not (mismatch or missing), f"run `make proto`: {mismatch + missing} differ"


@pytest.mark.parametrize(
    "method", [m for s in SERVICES for m in s.methods], ids=lambda m: m.full_name
)
async def test_every_rpc_is_implemented(broker: Broker, method: MethodDescriptor) -> None:
    """Calling with an empty request must never reach the UNIMPLEMENTED stub."""
    service, name = method.full_name.rsplit(".", 1)
    path = f"/{service}/{name}"
    async with broker.channel() as channel:
        empty: Any = b""
        try:
            if method.client_streaming:
                bidi: Any = channel.stream_stream(path)(iter([empty]))
                await bidi.read()
                bidi.cancel()
            elif method.server_streaming:
                stream: Any = channel.unary_stream(path)(empty)
                await stream.read()
                stream.cancel()
            else:
                await channel.unary_unary(path)(empty)
        except grpc.aio.AioRpcError as error:
            assert error.code() is not grpc.StatusCode.UNIMPLEMENTED, method.full_name
