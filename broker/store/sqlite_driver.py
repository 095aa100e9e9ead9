"""The SQLite driver the broker uses: a fast path, checked at start, or the stock one.

Why a fast path. SQLAlchemy's aiosqlite adapter makes four trips to
aiosqlite's worker thread for every statement (open a cursor, execute, fetch,
close). On this class of machine a trip costs 150-200 µs, which puts a
single-task commit near 3 ms. The fast dialect (`sqlite_onehop`) keeps
SQLAlchemy Core and aiosqlite but runs the whole execute-fetch-close sequence
as one function on aiosqlite's thread.

Writes whose results nobody reads go further: a statement executed with the
execution option `taskyard_defer=True` (`DEFERRED`) is handed to the database
thread and not awaited ("write-behind"). The thread runs it while the event
loop goes on preparing the rest of the transaction, and the next awaited
statement — a read, or the COMMIT — runs after it, in order, on the same
connection. An error in a deferred statement is kept and raised by that next
awaited trip, failing the transaction like any other; writes queued after a
failed one are skipped. The contract callers rely on, on every dialect: a
deferred write's error surfaces no later than the next awaited statement or
the commit, and fails the transaction. (On PostgreSQL and on the stock SQLite
dialect the option is ignored: the write runs inline and raises at once.)

What it relies on. Private internals of aiosqlite (`Connection._execute`,
`_tx`, `_conn`, `_connection`, `_running`) and of SQLAlchemy's adapter
(`_handle_exception`, `_execute_mutex`, `_cursor_cls`, the cursor's slots,
`sqlalchemy.util.concurrency.await_`), and it swaps the adapted connection's
`__class__`. None of that is API: a release of either library may change it.
pyproject.toml caps both at the minor versions the fast path was verified
with; requirements.lock pins the versions the suite runs on.

How it fails safe.
1. Importing the broker never touches those names: only `self_check` imports
   `sqlite_onehop`, and any error it raises is a failed check.
2. When the broker opens a SQLite database (`driver`, called by
   `database.open_database`), the self-check looks for every internal above
   and runs a real round trip through the fast dialect on an in-memory
   database: execute, fetch (RETURNING), rowcount, deferred writes then a
   read, commit, rollback, an error in a deferred write surfacing on the next
   read and on the commit. It runs on its own event loop in a thread, under a
   timeout, because one way to fail is to hang: aiosqlite up to 0.22.0 lets
   its database thread die on a queued call without a future, which is how
   write-behind queues its statements.
3. If anything is missing or misbehaves the broker logs one WARNING naming
   the step that failed, the error and the versions found, and uses
   SQLAlchemy's stock `sqlite+aiosqlite` dialect, on which everything works
   unchanged, only slower: `taskyard_defer` is ignored, and `BatchWrite`'s
   driver SQL goes through the stock `exec_driver_sql`.
4. `TASKYARD_SQLITE_DRIVER` overrides the choice: `auto` (the default: check,
   fall back), `stock` (no check, the stock dialect) or `fast` (check, and
   refuse to start if it fails). `make test` runs the store and end-to-end
   SQLite tests a second time with `stock`, so the fallback stays correct.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from broker.errors import ConfigError

log = logging.getLogger(__name__)

#: The fast dialect's driver name (`sqlite+taskyard_aiosqlite://`).
DRIVER = "taskyard_aiosqlite"
#: SQLAlchemy's own aiosqlite dialect, the fallback.
STOCK = "aiosqlite"
DEFER = "taskyard_defer"
#: Pass as `execution_options=` to a write whose result nobody reads.
DEFERRED: dict[str, Any] = {DEFER: True}

ENV = "TASKYARD_SQLITE_DRIVER"
MODES = ("auto", "fast", "stock")
CHECK_TIMEOUT_S = 10.0  # the round trip takes ~20 ms; this is for a loaded 2-core box


def requested_mode() -> str:
    """`auto`, `fast` or `stock`, from TASKYARD_SQLITE_DRIVER (unset or empty is `auto`)."""
    mode = os.environ.get(ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"{ENV} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def driver() -> str:
    """The SQLAlchemy driver for SQLite in this process: `DRIVER` or `STOCK`.

    The self-check runs once per process (per mode), so its warning is logged once.
    """
    return _choose(requested_mode())


@functools.cache
def _choose(mode: str) -> str:
    if mode == "stock":
        log.info("SQLite: SQLAlchemy's stock aiosqlite dialect (%s=stock)", ENV)
        return STOCK
    started = time.monotonic()
    failure = self_check()
    if failure is None:
        took_ms = (time.monotonic() - started) * 1000
        log.info("SQLite: fast path (self-check passed in %.0f ms; %s)", took_ms, versions())
        return DRIVER
    if mode == "fast":
        raise ConfigError(
            f"{ENV}=fast, but the SQLite fast path failed its self-check: {failure} "
            f"({versions()}); install the versions in requirements.lock, or unset {ENV}"
        )
    log.warning(
        "SQLite fast path disabled, using SQLAlchemy's stock aiosqlite dialect instead "
        "(correct, but about twice the time per statement): the self-check failed at %s "
        "(found %s; the fast path is verified with the versions in requirements.lock; "
        "%s=stock skips the check)",
        failure,
        versions(),
        ENV,
    )
    return STOCK


def versions() -> str:
    """The versions the fast path depends on, as found in this environment."""
    found = []
    for dist in ("SQLAlchemy", "aiosqlite"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} (no distribution metadata)")
    return ", ".join([*found, f"SQLite {sqlite3.sqlite_version}"])


# --- The self-check -------------------------------------------------------------------------


class _Failed(Exception):
    """The fast path answered, but not as it must."""


def self_check(timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """Run the fast path's round trip; None if it passed, else `step: what went wrong`.

    It runs on a private event loop in a daemon thread, so that it can be
    called from inside a running loop (the broker's) and abandoned if a
    broken driver hangs.
    """
    outcome: list[str | None] = []

    def check() -> None:
        try:
            outcome.append(_run(timeout))
        except BaseException as error:  # the event loop itself failed
            outcome.append(f"event loop: {type(error).__name__}: {error}")

    thread = threading.Thread(target=check, name="taskyard-sqlite-check", daemon=True)
    thread.start()
    thread.join(timeout + 5)  # _run gives up at `timeout`; this is for a hung shutdown
    return outcome[0] if outcome else f"shutdown: no answer within {timeout + 5:g} s"


# Probes that hung: never closed nor collected, as either would wait for them.
_abandoned: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []


def _run(timeout: float) -> str | None:
    step = ["import"]
    loop = asyncio.new_event_loop()
    probe = loop.create_task(_probe(step))
    # Not a cancellation: after a driver hangs, SQLAlchemy's clean-up of a
    # cancelled statement (rollback, close) goes to the same dead thread.
    done, _ = loop.run_until_complete(asyncio.wait({probe}, timeout=timeout))
    if not done:
        _abandoned.append((loop, probe))
        return f"{step[0]}: no answer within {timeout:g} s (the database thread hung or died)"
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    error = probe.exception()
    if error is None:
        return None
    what = str(error) if isinstance(error, _Failed) else f"{type(error).__name__}: {error}"
    return f"{step[0]}: {what}"


async def _probe(step: list[str]) -> None:
    from broker.store import sqlite_onehop

    step[0] = "connect"
    engine = create_async_engine(f"sqlite+{DRIVER}://", pool_reset_on_return=None)
    event.listen(engine.sync_engine, "connect", _like_the_writer)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            missing = sqlite_onehop.missing_internals(raw.dbapi_connection)
            if missing:
                raise _Failed("missing " + ", ".join(missing))
            await _round_trip(conn, step)
    finally:
        await engine.dispose()


def _like_the_writer(dbapi_connection: Any, _record: Any) -> None:
    # The broker's writer: an implicit BEGIN IMMEDIATE before the first write.
    dbapi_connection.isolation_level = "IMMEDIATE"


_INSERT = sa.text("INSERT INTO probe (name) VALUES (:name)")


async def _names(conn: AsyncConnection) -> list[str]:
    return [r[0] for r in await conn.execute(sa.text("SELECT name FROM probe ORDER BY name"))]


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise _Failed(f"{what}: expected {want!r}, got {got!r}")


async def _defer(conn: AsyncConnection, *names: str) -> None:
    for name in names:
        await conn.execute(_INSERT, {"name": name}, execution_options=DEFERRED)


async def _round_trip(conn: AsyncConnection, step: list[str]) -> None:
    """Every behaviour the broker needs from the fast path, in one transaction after another."""
    step[0] = "execute"
    await conn.exec_driver_sql("CREATE TABLE probe (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    step[0] = "fetch"
    returned = await conn.execute(sa.text("INSERT INTO probe (name) VALUES ('a') RETURNING id"))
    _expect("INSERT … RETURNING", [tuple(r) for r in returned], [(1,)])
    await conn.commit()

    step[0] = "deferred writes, then a read"
    await _defer(conn, "b")
    # BatchWrite's path: driver SQL with one tuple per row.
    await conn.exec_driver_sql(
        "INSERT INTO probe (name) VALUES (?)", [("c",), ("d",)], execution_options=DEFERRED
    )
    _expect("rows after deferred inserts", await _names(conn), ["a", "b", "c", "d"])
    step[0] = "rowcount"
    updated = await conn.execute(sa.text("UPDATE probe SET name = name || '1' WHERE id > 2"))
    _expect("UPDATE rowcount", updated.rowcount, 2)
    step[0] = "rollback"
    await conn.rollback()
    _expect("rows after rollback", await _names(conn), ["a"])
    step[0] = "commit"
    await _defer(conn, "b")
    await conn.commit()
    await conn.rollback()  # nothing left to undo
    _expect("rows after commit", await _names(conn), ["a", "b"])

    step[0] = "an error in a deferred write, then a read"
    await _raises_integrity_error(conn, lambda: _defer(conn, "c", "a", "z"), then=_names)
    await conn.rollback()
    _expect("rows after the failed transaction", await _names(conn), ["a", "b"])
    step[0] = "an error in a deferred write, then the commit"
    await _raises_integrity_error(conn, lambda: _defer(conn, "b"), then=_commit)
    await conn.rollback()
    _expect("rows after the failed commit", await _names(conn), ["a", "b"])


async def _commit(conn: AsyncConnection) -> None:
    await conn.commit()


async def _raises_integrity_error(
    conn: AsyncConnection,
    writes: Callable[[], Any],
    *,
    then: Callable[[AsyncConnection], Any],
) -> None:
    # The fast path raises at `then`; a write that raised at once would be
    # correct too (it is what the stock dialect does), so either passes.
    try:
        await writes()
        await then(conn)
    except sa.exc.IntegrityError:
        return
    raise _Failed("the error of a deferred write was lost")
