"""PostgreSQL refusing writes: read-only, out of connections, a lost connection.

Each is a retryable status with a reason (UNAVAILABLE `STORAGE_READ_ONLY`,
`STORAGE_UNAVAILABLE`) rather than INTERNAL, health says NOT_SERVING while it lasts,
and the broker recovers by itself once the database does. Disk full (SQLSTATE 53100)
cannot be made on a shared server; it maps like SQLite's (test_storage_full.py) and
tests/unit/test_storage_failures.py holds the mapping.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from tests.databases import ADMIN_URL
from tests.e2e.test_storage_full import health_becomes
from tests.helpers import Broker
from worker_sdk import Client, TaskyardError

NOT_SERVING = 2  # grpc.health.v1.HealthCheckResponse.NOT_SERVING
SERVING = 1


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: these conditions are PostgreSQL's."""
    return str(request.param)


def _database(url: str) -> str:
    database = make_url(url).database
    assert database is not None
    return database


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _end_sessions(database: str, role: str | None = None) -> None:
    """Terminate the broker's connections, so that it must open new ones."""
    who = f"AND usename = '{role}'" if role else ""
    await _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid() {who}"
    )


async def _submit_error(client: Client) -> TaskyardError:
    with pytest.raises(TaskyardError) as info:
        await client.submit("echo", 1)
    return info.value


async def _submit_after_reconnect(client: Client) -> TaskyardError:
    """The first write after the sessions ended may see its connection die (also
    STORAGE_UNAVAILABLE); the next one meets the condition itself."""
    error = await _submit_error(client)
    if error.reason == "STORAGE_UNAVAILABLE":
        return await _submit_error(client)
    return error


async def test_a_read_only_database_is_storage_read_only_and_passes_without_a_restart(
    broker: Broker, client: Client, db_url: str
) -> None:
    database = _database(db_url)
    before = await client.submit("echo", "before")
    await _admin(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    await _end_sessions(database)
    try:
        error = await _submit_after_reconnect(client)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_READ_ONLY")
        assert error.retry_after is not None
        await health_becomes(broker, NOT_SERVING)
        # Reads go on.
        assert [t.id async for t in client.list()] == [before.id]
        assert (await client.get(before.id)).payload == "before"
    finally:
        await _admin(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        await _end_sessions(database)
    await _eventually_accepted(client)
    await health_becomes(broker, SERVING)


@pytest.fixture
async def limited_role(db_url: str) -> AsyncIterator[str]:
    """A login role with every right on the test database, whose connection limit tests set."""
    role = f"taskyard_low_{secrets.token_hex(4)}"
    database = _database(db_url)
    await _admin(f'CREATE ROLE "{role}" LOGIN')
    conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=10)
    try:
        await conn.execute(f'GRANT ALL ON DATABASE "{database}" TO "{role}"')
        await conn.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
        await conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
        await conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    finally:
        await conn.close()
    try:
        yield role
    finally:
        await _end_sessions(database, role)
        conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=10)
        try:
            await conn.execute(f'DROP OWNED BY "{role}"')
        finally:
            await conn.close()
        await _admin(f'DROP ROLE "{role}"')


async def test_a_role_out_of_connections_is_storage_unavailable_and_passes_without_a_restart(
    db_url: str, limited_role: str, tmp_path: Path
) -> None:
    url = make_url(db_url).set(username=limited_role).render_as_string(hide_password=False)
    broker = Broker(db_url=url, workdir=tmp_path)
    await broker.start()
    database = _database(db_url)
    try:
        async with Client(broker.target) as client:
            kept = await client.submit("echo", "before")
            await _admin(f'ALTER ROLE "{limited_role}" CONNECTION LIMIT 0')
            await _end_sessions(database, limited_role)
            error = await _submit_after_reconnect(client)
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
            )
            with pytest.raises(TaskyardError) as read:
                await client.get(kept.id)
            assert (read.value.code, read.value.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
            )
            await health_becomes(broker, NOT_SERVING)

            await _admin(f'ALTER ROLE "{limited_role}" CONNECTION LIMIT -1')
            await _eventually_accepted(client)
            await health_becomes(broker, SERVING)
            assert (await client.get(kept.id)).payload == "before"
    finally:
        await broker.stop()


async def _eventually_accepted(client: Client) -> None:
    """Submit until the broker takes it: its connections come back on their own."""
    async with asyncio.timeout(30):
        while True:
            try:
                await client.submit("echo", "after")
                return
            except TaskyardError as error:
                assert error.code is grpc.StatusCode.UNAVAILABLE, error
                await asyncio.sleep(error.retry_after or 0.2)  # as a client would
