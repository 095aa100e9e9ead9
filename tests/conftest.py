"""Fixtures: a real broker process per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.databases import PostgresDatabases
from tests.helpers import Broker, kill_leftovers, reap_leftovers
from worker_sdk import Client

_postgres = PostgresDatabases()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of one backend's own behaviour (SQLite's file locks, PostgreSQL's statements)
    exist only on that backend."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("backend") if params else None
        elsewhere = (item.get_closest_marker("sqlite_only") and backend == "postgresql") or (
            item.get_closest_marker("postgres_only") and backend == "sqlite"
        )
        (drop if elsewhere else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_template() -> Iterator[None]:
    yield
    import asyncio

    asyncio.run(_postgres.close())


@pytest_asyncio.fixture(autouse=True)
async def _no_leftover_processes() -> AsyncIterator[None]:
    """Processes a test leaves running (it failed before stopping them) die with it.

    Torn down after the test's other fixtures (it is set up first) and before its
    event loop closes, so that each process is reaped and its pipes closed here.
    """
    yield
    await reap_leftovers()
    kill_leftovers()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test; every broker-based test runs on both."""
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'taskyard.db'}"
        return
    url = await _postgres.create()
    try:
        yield url
    finally:
        await _postgres.drop(url)


@pytest.fixture
def broker_args() -> list[str]:
    """Extra broker flags; override in a module to tune lease durations and such."""
    return []


@pytest.fixture
async def broker(db_url: str, tmp_path: Path, broker_args: list[str]) -> AsyncIterator[Broker]:
    instance = Broker(db_url=db_url, workdir=tmp_path, extra_args=broker_args)
    await instance.start()
    try:
        yield instance
    finally:
        if instance.process is not None and instance.process.proc.returncode is None:
            await instance.stop()


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[Client]:
    async with Client(broker.target) as c:
        yield c
