"""Fixtures: a real broker process per test on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import Broker
from worker_sdk import Client


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'taskyard.db'}"


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
