"""Fixtures for the conformance suite: the same protocol cases against every worker.

`language` parametrizes each test over the Python SDK worker
(tests/conformance/python_worker.py) and the Node.js example worker
(examples/node-worker/src/conformance.js); both implement the same task types.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker, LoggedProcess, python_env

NODE_WORKER = ROOT / "examples" / "node-worker"
LANGUAGES = ["python", "node"]


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_WORKER / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return "examples/node-worker/node_modules is missing: run `npm ci` in examples/node-worker"
    return None


def known_worker_bug(request: pytest.FixtureRequest, language: str, bugs: dict[str, str]) -> None:
    """Mark this case an expected failure for a worker with a known, reported bug.

    Not strict: the bugs are timing-dependent, and the case must keep running (and
    pass) for the other worker. Remove the entry once the worker is fixed.
    """
    if language in bugs:
        request.node.add_marker(pytest.mark.xfail(reason=bugs[language], strict=False))


@pytest.fixture(params=LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    lang: str = request.param
    if lang == "node" and (problem := _node_problem()):
        # CI must run every case; a developer without Node gets a clear skip.
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return lang


@dataclass(eq=False)
class ConformanceWorker:
    """A worker process of either language, seen from outside."""

    name: str
    process: LoggedProcess
    paused: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_for_line(self, pattern: str, *, after: int = 0, timeout: float = 30.0) -> None:
        await self.process.wait_for_line(pattern, after=after, timeout=timeout)

    async def connected(self, *, after: int = 0) -> None:
        await self.wait_for_line("connected to", after=after)

    async def pause(self) -> None:
        await self.process.signal(signal.SIGSTOP)
        self.paused = True

    async def resume(self) -> None:
        await self.process.signal(signal.SIGCONT)
        self.paused = False

    async def stop(self) -> int:
        if self.paused:
            await self.resume()
        return await self.process.stop()


@dataclass(eq=False)
class Workers:
    """Starts conformance workers of one language against one broker."""

    language: str
    broker: Broker
    workdir: Path
    started: list[ConformanceWorker] = field(default_factory=list)

    @property
    def record_path(self) -> Path:
        return self.workdir / "record.log"

    def _command(self, name: str, concurrency: int) -> list[str]:
        common = ["--target", self.broker.target, "--worker-id", name]
        if self.language == "python":
            app = "tests.conformance.python_worker:worker"
            return [sys.executable, "-m", "broker", "worker", app, *common, "-c", str(concurrency)]
        script = str(NODE_WORKER / "src" / "conformance.js")
        node = shutil.which("node") or "node"
        return [node, script, *common, "-c", str(concurrency), "--grace", "5"]

    async def start(self, name: str, *, concurrency: int = 4) -> ConformanceWorker:
        env = python_env({"TASKYARD_TEST_RECORD": str(self.record_path)})
        process = await LoggedProcess.start(
            self._command(name, concurrency), self.workdir / f"{name}.log", env
        )
        worker = ConformanceWorker(name, process)
        self.started.append(worker)
        await worker.connected()
        return worker

    def records(self, event: str, task_id: str | None = None) -> list[list[str]]:
        """Record lines `<event> <task_id> <attempt> <pid> [extra]` of one event."""
        if not self.record_path.exists():
            return []
        lines = [line.split() for line in self.record_path.read_text().splitlines()]
        return [
            line for line in lines if line[0] == event and (task_id is None or line[1] == task_id)
        ]

    def batch_sizes(self) -> list[int]:
        return [int(line[4]) for line in self.records("batch")]


@pytest.fixture
async def workers(language: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Workers]:
    pool = Workers(language, broker, tmp_path)
    try:
        yield pool
    finally:
        for worker in pool.started:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await worker.stop()
