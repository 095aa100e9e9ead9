"""Database errors that are the storage's state, not a bug: as domain errors with a reason.

A full disk, a database that accepts no writes, or one out of connections used
to reach callers as INTERNAL. `storage_error` recognizes them on both backends
(SQLite's result codes, PostgreSQL's SQLSTATEs) anywhere in an exception's
chain, so that the committer and the servicers answer RESOURCE_EXHAUSTED
(`STORAGE_FULL`) or UNAVAILABLE (`STORAGE_READ_ONLY`, `STORAGE_UNAVAILABLE`),
both retryable, and the broker reports the condition in its health and metrics.
A NUL in a text value, which PostgreSQL cannot store, is INVALID_ARGUMENT: the
API refuses NULs before they get here (core/validation.py), this is the net.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from broker.errors import (
    InvalidArgument,
    StorageFull,
    StorageReadOnly,
    StorageUnavailable,
    TaskyardError,
)

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_READONLY = 8
_SQLITE_FULL = 13

_FULL = "the database has no room to grow (its disk, or its size limit, is full); free space"
_READ_ONLY = "the database accepts no writes now (read-only); reads still work"
_BUSY = "the database cannot take more connections now; retry shortly"
_LOST = "the connection to the database was lost; retry (with the same request_id)"


def storage_error(exc: BaseException) -> TaskyardError | None:
    """The domain error for a storage condition somewhere in `exc`'s chain, or None."""
    for error in _chain(exc):
        if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
            # The connection died under the statement (the server restarted, or an
            # administrator ended it): nothing was applied unless it died in COMMIT,
            # which a retry with the same request_id covers. The next call reconnects.
            return StorageUnavailable(_LOST)
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            primary = code & 0xFF
            if primary == _SQLITE_FULL:
                return StorageFull(_FULL)
            if primary == _SQLITE_READONLY:
                return StorageReadOnly(_READ_ONLY)
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            mapped = _by_sqlstate(state)
            if mapped is not None:
                return mapped
    return None


def conflicted(exc: BaseException) -> bool:
    """PostgreSQL gave up one of two transactions that wanted each other's rows (a
    deadlock, a serialization failure): the same work, run again, succeeds."""
    return any(getattr(e, "sqlstate", None) in ("40P01", "40001") for e in _chain(exc))


def _by_sqlstate(state: str) -> TaskyardError | None:
    if state == "53100":  # disk_full
        return StorageFull(_FULL)
    if state == "25006":  # read_only_sql_transaction: a standby, or default_transaction_read_only
        return StorageReadOnly(_READ_ONLY)
    # too many connections, a configured limit, starting up, terminated by an administrator
    if state in ("53300", "53400", "57P03", "57P01", "57P02"):
        return StorageUnavailable(_BUSY)
    if state == "22021":  # character_not_in_repertoire: a NUL in text
        return InvalidArgument(
            "a text value contains a character the database cannot store (NUL)",
            reason="INVALID_CHARACTER",
        )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        error = stack.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        stack += [getattr(error, "orig", None), error.__cause__, error.__context__]
