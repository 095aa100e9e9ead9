"""At a steady load with short retention, the database stops growing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskSpec


@pytest.fixture
def broker_args(tmp_path: Path) -> list[str]:
    config = tmp_path / "taskyard.toml"
    config.write_text('[defaults.retention]\nsucceeded = "1s"\n')
    return ["--config", str(config), "--retention-interval", "0.25"]


async def _sizes(db_url: str) -> tuple[int, int]:
    """(pages or bytes in use, task rows), read beside the broker."""
    if db_url.startswith("sqlite"):
        path = db_url.split(":///", 1)[1]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM task").fetchone()[0]
        return pages - free, rows
    pg = await asyncpg.connect(db_url)
    try:
        rows = await pg.fetchval("SELECT count(*) FROM task")
        return 0, int(rows)
    finally:
        await pg.close()


@pytest.mark.slow
async def test_database_size_stays_flat_at_a_steady_load(
    broker: Broker, client: Client, tmp_path: Path, backend: str
) -> None:
    workers = [await start_worker(broker, tmp_path, name=f"w{i}", concurrency=32) for i in (1, 2)]
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    submitted = 0
    while (elapsed := time.monotonic() - started) < 12:
        await client.submit_many(TaskSpec("echo", {"n": submitted + i}) for i in range(40))
        submitted += 40
        if elapsed > 4 and (not samples or elapsed - samples[-1][0] > 1):
            samples.append((elapsed, *await _sizes(broker.db_url)))
        await asyncio.sleep(0.1)  # the load's pacing, not a wait for an event
    for w in workers:
        await w.stop()

    rows = [r for _, _, r in samples]
    # ~400 tasks/s kept for 1 s plus a sweep interval: a few hundred rows at a
    # time, never the thousands submitted.
    assert submitted > 3000
    assert max(rows) < submitted / 3, f"rows {rows} of {submitted} submitted"
    if backend == "sqlite":
        # Freed pages are reused, so the file stops growing. (PostgreSQL
        # reclaims dead rows by autovacuum, on a scale of minutes: docs/deploy.md.)
        pages = [p for _, p, _ in samples]
        assert pages[-1] <= pages[0] * 1.3, f"pages in use grew: {pages}"
