"""The SDK with only opentelemetry-api, or with no OpenTelemetry at all (a real broker)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.helpers import ROOT, Broker, python_env
from tests.telemetry.api_only import SPAN_ID, TRACE_ID

pytestmark = pytest.mark.sqlite_only  # about the SDK, not the database


async def run_script(broker: Broker, mode: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.telemetry.api_only", broker.target, mode,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env=python_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_with_only_the_api_a_remote_context_passes_through(broker: Broker) -> None:
    result = await run_script(broker, "no-sdk")
    assert result["sdk_loaded"] is False
    # Inside a context: stored as given, made current around the handler.
    assert result["inside"] == {
        "handler_trace_id": TRACE_ID,
        "stored": {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"},
    }
    # Outside any: nothing stored, nothing current.
    assert result["outside"] == {"handler_trace_id": "", "stored": {}}


async def test_without_opentelemetry_tasks_still_run(broker: Broker) -> None:
    result = await run_script(broker, "no-otel")
    assert result["inside"] == {"handler_trace_id": None, "stored": {}}
    assert result["outside"] == {"handler_trace_id": None, "stored": {}}
