"""A migrated database handle for store-level tests, on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.store.database import Database, ensure_schema, open_database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    handle = open_database(db_url)
    await ensure_schema(handle, auto_migrate=False)
    try:
        yield handle
    finally:
        await handle.dispose()
