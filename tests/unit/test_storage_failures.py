"""Storage conditions as domain errors, and how long the broker reports them.

The exceptions are the drivers' own: a real SQLITE_FULL from an in-memory SQLite
database with a page cap, and asyncpg's classes for PostgreSQL's SQLSTATEs, wrapped as
SQLAlchemy wraps them.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import grpc
import pytest
import sqlalchemy as sa

from broker.clock import FakeClock
from broker.engine.storage import WINDOW_US, StorageHealth
from broker.store.failures import storage_error


def _wrapped(error: Exception) -> sa.exc.DBAPIError:
    """As SQLAlchemy raises it: a DBAPIError whose `orig` is the driver's error."""
    try:
        raise error
    except Exception as exc:
        return sa.exc.DBAPIError("INSERT …", {}, exc)


def _sqlite_full() -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute("PRAGMA max_page_count = 3")
    try:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError("SQLite took 100 kB into three pages")


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (_sqlite_full(), grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL"),
        (
            asyncpg.exceptions.DiskFullError("no space"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "STORAGE_FULL",
        ),
        (
            asyncpg.exceptions.ReadOnlySQLTransactionError("ro"),
            grpc.StatusCode.UNAVAILABLE,
            "STORAGE_READ_ONLY",
        ),
        (
            asyncpg.exceptions.TooManyConnectionsError("busy"),
            grpc.StatusCode.UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
        ),
        (
            asyncpg.exceptions.AdminShutdownError("ended"),
            grpc.StatusCode.UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
        ),
        (
            asyncpg.exceptions.CharacterNotInRepertoireError("0x00"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_CHARACTER",
        ),
    ],
)
def test_storage_conditions_map_to_their_status_bare_or_wrapped(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    for raised in (error, _wrapped(error)):
        mapped = storage_error(raised)
        assert mapped is not None, raised
        assert (mapped.code, mapped.reason) == (code, reason)


def test_other_database_errors_stay_unmapped() -> None:
    assert storage_error(_wrapped(asyncpg.exceptions.UniqueViolationError("dup"))) is None
    assert storage_error(sqlite3.OperationalError("no such table: x")) is None
    assert storage_error(ValueError("bug")) is None


def test_a_full_database_ends_when_what_failed_succeeds_or_after_a_quiet_window() -> None:
    clock = FakeClock()
    health = StorageHealth(clock)
    health.refused("STORAGE_FULL", ["CreateTasks"])
    assert health.problem() == "STORAGE_FULL"
    # Writes that need no new space go on; they do not end the condition.
    health.committed(["ExtendLeases", "ClaimTick"])
    assert health.problem() == "STORAGE_FULL"
    health.committed(["CreateTasks"])
    assert health.problem() is None

    health.refused("STORAGE_FULL", ["CreateTasks"])
    clock.advance(WINDOW_US / 1_000_000 - 0.001)
    assert health.problem() == "STORAGE_FULL" and health.seconds_left() > 0
    clock.advance(0.001)
    assert health.problem() is None and health.seconds_left() == 0


def test_a_read_only_database_ends_with_any_commit() -> None:
    health = StorageHealth(FakeClock())
    health.refused("STORAGE_READ_ONLY", ["CreateTasks"])
    health.committed(["ClaimTick"])
    assert health.problem() is None
