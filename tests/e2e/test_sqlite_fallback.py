"""A broker whose SQLite fast path is broken warns once and serves on the stock dialect.

The broker runs in a real process whose installed libraries were broken on
purpose before it started (tests/broken_sqlite.py); a real worker runs real
tasks through it. Before the self-check existed, `no-await_` kept the broker
from importing and `drops-deferred` lost the tasks' writes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from broker.store.sqlite_driver import ENV
from tests.helpers import READY, Broker, LoggedProcess, python_env, start_worker
from worker_sdk import Client, TaskSpec

pytestmark = pytest.mark.sqlite_only


async def _start(db_url: str, workdir: Path, *, breakage: str, env: dict[str, str]) -> Broker:
    broker = Broker(db_url=db_url, workdir=workdir)
    args = [
        sys.executable, "-m", "tests.broken_sqlite", breakage,
        "broker", "--listen", "127.0.0.1:0", "--db", db_url,
    ]  # fmt: skip
    broker.process = await LoggedProcess.start(args, workdir / "broker.log", python_env(env))
    broker.port = int((await broker.process.wait_for_line(READY)).group(1))
    return broker


async def _round_trip(broker: Broker, workdir: Path) -> None:
    worker = await start_worker(broker, workdir, name="w1")
    async with Client(broker.target) as client:
        tasks = await client.submit_many(TaskSpec("echo", {"i": i}) for i in range(50))
        results = await asyncio.gather(*(client.wait(t.id, timeout=30) for t in tasks))
    assert results == [{"i": i} for i in range(50)]
    await worker.stop()
    assert await broker.stop() == 0


def _warnings(workdir: Path) -> list[str]:
    lines = (workdir / "broker.log").read_text().splitlines()
    return [line for line in lines if " WARNING " in line]


@pytest.mark.parametrize(
    ("breakage", "failure"),
    [
        ("no-await_", "import: ImportError: cannot import name 'await_'"),
        ("drops-deferred", "deferred writes, then a read: rows after deferred inserts"),
    ],
)
async def test_a_broken_fast_path_warns_once_and_the_broker_serves_on_the_stock_dialect(
    db_url: str, tmp_path: Path, breakage: str, failure: str
) -> None:
    broker = await _start(db_url, tmp_path, breakage=breakage, env={ENV: ""})

    await _round_trip(broker, tmp_path)

    [warning] = _warnings(tmp_path)
    assert "using SQLAlchemy's stock aiosqlite dialect" in warning
    assert failure in warning
    assert "found SQLAlchemy 2." in warning and "aiosqlite 0." in warning


async def test_the_switch_forces_the_stock_dialect_without_a_check_or_a_warning(
    db_url: str, tmp_path: Path
) -> None:
    # Broken too: the check would fail, so a clean log shows it did not run.
    broker = await _start(db_url, tmp_path, breakage="drops-deferred", env={ENV: "stock"})

    await _round_trip(broker, tmp_path)

    assert _warnings(tmp_path) == []
    log = (tmp_path / "broker.log").read_text()
    assert f"SQLAlchemy's stock aiosqlite dialect ({ENV}=stock)" in log
