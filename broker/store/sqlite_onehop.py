"""The SQLite fast path: SQLAlchemy's aiosqlite dialect, one thread hop per statement.

Why it exists, what it relies on and how the broker falls back when that
fails are told in `sqlite_driver`, which alone imports this module, inside its
start-up self-check: an import error here (a private name gone from SQLAlchemy
or aiosqlite) fails the check, never the broker.

The private names used, all checked by `missing_internals` and exercised by
the self-check's round trip:

- aiosqlite `Connection`: `_execute` (queue a function on the database thread
  and await it), `_tx` (that queue; a write-behind statement is put on it with
  no future), `_conn` (the sqlite3 connection), `_connection`, `_running`.
- SQLAlchemy's aiosqlite adapter: the connection's `_handle_exception`,
  `_execute_mutex` and `_cursor_cls`; the cursor's slots (`_adapt_connection`,
  `_connection`, `_cursor`, `_rows`, `_soft_closed_memoized`);
  `sqlalchemy.util.concurrency.await_` (SQLAlchemy 2.1's name). `_Dbapi.connect`
  swaps the adapted connection's `__class__` for `_OneHopConnection`.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

from broker.store.sqlite_driver import DEFER, DRIVER

_Result = tuple[Any, list[Any], int, int | None]


def _execute(conn: sqlite3.Connection, operation: str, parameters: Sequence[Any] | None) -> _Result:
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters or ())
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, operation: str, seq: Sequence[Any]) -> _Result:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        return None, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


Deferred = tuple[str, Any, bool]  # (statement, parameters, executemany?)
_FAILED = "_taskyard_failed"


class _Failure:
    """The first error of the write-behind statements since the last awaited trip.

    Read and written only on the database thread, in queue order.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def raise_pending(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


def _write(conn: sqlite3.Connection, failure: _Failure, statement: Deferred) -> None:
    if failure.error is not None:
        return  # the transaction is already lost; its next awaited trip says so
    operation, parameters, many = statement
    try:
        if many:
            conn.executemany(operation, parameters)
        else:
            conn.execute(operation, parameters or ())
    except BaseException as error:
        failure.error = error


def _run_all(
    conn: sqlite3.Connection, failure: _Failure, last: Deferred | None, commit: bool
) -> _Result:
    """Raise a write-behind error, or run `last` (its result is returned), then maybe COMMIT."""
    failure.raise_pending()
    result: _Result = (None, [], -1, None)
    if last is not None:
        operation, parameters, many = last
        result = (_executemany if many else _execute)(conn, operation, parameters)
    if commit:
        conn.commit()
    return result


def _rollback(conn: sqlite3.Connection, failure: _Failure) -> None:
    failure.error = None  # whatever failed is rolled back with the rest
    conn.rollback()


async def _nothing() -> None:
    return None


def _failure(driver: Any) -> _Failure:
    failure: _Failure | None = getattr(driver, _FAILED, None)
    if failure is None:
        failure = _Failure()
        setattr(driver, _FAILED, failure)
    return failure


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        return None

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run((operation, parameters, False)))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run((operation, seq_of_parameters, True)))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def defer(self, operation: Any, parameters: Any, many: bool) -> None:
        """Hand a write to the database thread without waiting (see the module docstring)."""
        driver = self._connection
        if not driver._running or not driver._connection:
            raise ValueError("Connection closed")
        statement = (operation, list(parameters) if many else parameters, many)
        # aiosqlite's queue, as its own `_execute` uses it; no future: nobody waits.
        driver._tx.put_nowait(
            (None, functools.partial(_write, driver._conn, _failure(driver), statement))
        )
        self._description, self._rowcount, self._lastrowid = None, -1, None
        self._rows = collections.deque()
        # SQLAlchemy's AsyncConnection.execute insists that every statement
        # awaits something; a finished coroutine satisfies it without a trip.
        await_(_nothing())

    async def _run(self, statement: Deferred) -> None:
        async with self._adapt_connection._execute_mutex:
            driver = self._connection
            result = await driver._execute(
                _run_all, driver._conn, _failure(driver), statement, False
            )
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor

    def commit(self) -> None:
        driver = self._connection
        if not driver._connection:
            return
        try:
            await_(driver._execute(_run_all, driver._conn, _failure(driver), None, True))
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        driver = self._connection
        if not driver._connection:
            return
        try:
            await_(driver._execute(_rollback, driver._conn, _failure(driver)))
        except Exception as error:
            self._handle_exception(error)


class _Dbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        connection = super().connect(*arg, **kw)
        connection.__class__ = _OneHopConnection
        return connection


class OneHopDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return _Dbapi(__import__("aiosqlite"), __import__("sqlite3"))

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        if context is not None and context.execution_options.get(DEFER):
            cursor.defer(statement, parameters, False)
        else:
            cursor.execute(statement, parameters)

    def do_executemany(
        self, cursor: Any, statement: Any, parameters: Any, context: Any = None
    ) -> None:
        if context is not None and context.execution_options.get(DEFER):
            cursor.defer(statement, parameters, True)
        else:
            cursor.executemany(statement, parameters)


registry.register(f"sqlite.{DRIVER}", __name__, "OneHopDialect")


# --- What the self-check verifies is there ------------------------------------------------

_DRIVER_NEEDS = ("_execute", "_conn", "_tx", "_running", "_connection")
_ADAPTER_NEEDS = ("_handle_exception", "_execute_mutex", "_connection", "_cursor_cls")
_CURSOR_NEEDS = ("_adapt_connection", "_connection", "_cursor", "_rows", "_soft_closed_memoized")


def missing_internals(adapted: Any) -> list[str]:
    """The private names this module uses that are absent, given an open connection's adapter."""
    missing = [
        f"sqlalchemy {type(adapted).__name__}.{name}"
        for name in _ADAPTER_NEEDS
        if not _has(adapted, name)
    ]
    missing += [
        f"sqlalchemy AsyncAdapt_aiosqlite_cursor.{name}"
        for name in _CURSOR_NEEDS
        if not _defines(AsyncAdapt_aiosqlite_cursor, name)
    ]
    driver = getattr(adapted, "_connection", None)
    if driver is not None:
        missing += [f"aiosqlite.Connection.{n}" for n in _DRIVER_NEEDS if not _has(driver, n)]
        if _has(driver, "_tx") and not hasattr(driver._tx, "put_nowait"):
            missing.append("aiosqlite.Connection._tx.put_nowait")
    if type(adapted) is not _OneHopConnection:
        missing.append(f"the connection class swap (got {type(adapted).__name__})")
    return missing


def _has(obj: Any, name: str) -> bool:
    # Not hasattr: aiosqlite's `_conn` property raises ValueError on a closed connection.
    return name in getattr(obj, "__dict__", {}) or _defines(type(obj), name)


def _defines(cls: type, name: str) -> bool:
    return any(name in vars(k) for k in cls.__mro__)
