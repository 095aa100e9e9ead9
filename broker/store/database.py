"""Connecting to the database: URLs, engines, SQLite pragmas and schema revisions.

The broker writes through one connection (the committer's) and reads through a
small pool. On SQLite the writer begins every transaction with BEGIN IMMEDIATE
so that a write never has to upgrade a read lock, and a lock file keeps a
second broker off the same database file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from broker.errors import ConfigError

_MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Accept the URL spellings users paste and pick the async driver."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


@dataclass
class Database:
    url: str
    writer: AsyncEngine
    reader: AsyncEngine
    _lock_fd: int | None = None

    @property
    def backend(self) -> str:
        return "postgresql" if self.writer.dialect.name == "postgresql" else "sqlite"

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    async def dispose(self) -> None:
        await self.writer.dispose()
        await self.reader.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def open_database(
    url: str, *, sqlite_synchronous: str = "NORMAL", sqlite_max_bytes: int | None = None
) -> Database:
    url = normalize_url(url)
    parsed = make_url(url)
    if _backend(parsed) == "sqlite":
        return _open_sqlite(url, sqlite_synchronous, sqlite_max_bytes)
    writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    reader = create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    return Database(url, writer, reader)


def probe(url: str) -> None:
    """Open the database once and run `SELECT 1`, so that a bad `--db` fails before a broker starts.

    SQLite is opened with the stock dialect: the fast path's self-check belongs
    to the broker's own start, where logging is set up and its one warning is
    seen (the check runs once per process). A SQLite file that does not exist
    yet is left for the broker to create.
    """
    parsed = make_url(normalize_url(url))
    if _backend(parsed) == "sqlite":
        if not Path(str(parsed.database)).exists():
            return
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    asyncio.run(_select_one(parsed))


async def _select_one(parsed: URL) -> None:
    engine = create_async_engine(parsed, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _backend(parsed: URL) -> str:
    """The backend of a URL the broker can serve from; anything else is a ConfigError."""
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("SQLite needs a file: use sqlite+aiosqlite:///path/to/taskyard.db")
        return backend
    if backend == "postgresql":
        return backend
    raise ConfigError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
    )


def _open_sqlite(url: str, synchronous: str, max_bytes: int | None = None) -> Database:
    from broker.store import sqlite_driver

    parsed = make_url(url)
    path = parsed.database
    assert path is not None  # checked by _backend
    if synchronous.upper() not in {"NORMAL", "FULL"}:
        raise ConfigError(f"--sqlite-synchronous must be NORMAL or FULL, got {synchronous!r}")
    # The fast path if its self-check passes, else the stock dialect (see sqlite_driver).
    url = parsed.set(drivername=f"sqlite+{sqlite_driver.driver()}").render_as_string(
        hide_password=False
    )
    lock_fd = _lock_file(Path(path))
    # Connections run in autocommit or commit explicitly, so the pool's
    # rollback-on-return would only cost a thread hop per checkout.
    writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_reset_on_return=None)
    reader = create_async_engine(url, pool_size=4, max_overflow=4, pool_reset_on_return=None)
    # The writer lets the driver open each transaction implicitly, as BEGIN
    # IMMEDIATE before its first write, in the same trip as that write; reads
    # that precede it in an op (fencing) cannot race because this connection
    # is the only writer (the lock file keeps other brokers out). Readers run
    # each statement in autocommit.
    _install_pragmas(
        writer,
        synchronous.upper(),
        isolation_level="IMMEDIATE",
        cache_kib=WRITER_CACHE_KIB,
        max_bytes=max_bytes,
    )
    _install_pragmas(reader, synchronous.upper(), isolation_level=None, cache_kib=READER_CACHE_KIB)
    return Database(url, writer, reader, lock_fd)


def _lock_file(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another broker is using {path} (lock {lock_path} is held); a SQLite database "
            "serves one broker — use PostgreSQL to run several"
        ) from None
    return fd


# SQLite's page cache is per connection and counts in the broker's memory: it fills as
# the database grows and then stays. The one writer walks the hot ends of the indexes
# on every commit; readers serve lookups and lists, where the OS file cache does as
# well. At most 32 + 8 * 8 MiB in all (the reader pool has up to 8 connections).
WRITER_CACHE_KIB = 32 * 1024
READER_CACHE_KIB = 8 * 1024


def _install_pragmas(
    engine: AsyncEngine,
    synchronous: str,
    isolation_level: str | None,
    *,
    cache_kib: int,
    max_bytes: int | None = None,
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA cache_size=-{cache_kib}")
        if max_bytes is not None:
            # Per connection, so set on each; the writer is the only one that grows the file.
            cursor.execute("PRAGMA page_size")
            page = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count={max(max_bytes // page, 1)}")
        cursor.close()
        dbapi_connection.isolation_level = isolation_level


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: sa.Connection, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


async def current_revision(db: Database) -> str | None:
    async with db.writer.connect() as conn:
        return await conn.run_sync(_current_revision)


async def ensure_schema(db: Database, *, auto_migrate: bool) -> str:
    """Create the schema on first start; otherwise check (or migrate) the revision.

    Returns the revision the database is at afterwards.
    """
    head = head_revision()
    known = {
        rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
    }
    async with db.writer.connect() as conn:
        current = await conn.run_sync(_current_revision)
        if current == head:
            return head
        if current is not None and current not in known:
            raise ConfigError(
                f"the database schema is at revision {current}, newer than this broker knows "
                f"(its newest is {head}); upgrade Taskyard before starting it on this database"
            )
        if current is not None and not auto_migrate:
            raise ConfigError(
                f"the database schema is at revision {current} but this broker needs {head}; "
                "run `taskyard db upgrade --db URL` (or start the broker with --auto-migrate)"
            )
        await _run_upgrade(conn)
    if current is None:
        log.info("created the database schema (revision %s)", head)
    else:
        log.info("migrated the database schema from revision %s to %s", current, head)
    return head


async def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to `revision`; returns the revision before and after."""
    async with db.writer.connect() as conn:
        before = await conn.run_sync(_current_revision)
        await _run_upgrade(conn, revision)
        after = await conn.run_sync(_current_revision)
    return before, after


async def _run_upgrade(conn: AsyncConnection, revision: str = "head") -> None:
    await conn.run_sync(_upgrade, revision)
    await conn.commit()
