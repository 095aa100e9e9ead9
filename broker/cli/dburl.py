"""`--db` as people type it: a URL or a plain path, checked before the broker starts.

A plain path (`data/x.db`) means a SQLite file. The database is opened once
up front so that a missing directory, a refused connection or an unknown
PostgreSQL database is one line on stderr, not a traceback from deep inside
the broker's start-up.
"""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from broker.errors import ConfigError


def database_url(value: str) -> str:
    """The URL for `value`: itself when it has a scheme, else a SQLite file URL."""
    if "://" in value:
        _check_sqlite_directory(value)
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        raise click.BadParameter(
            f"{value} is a directory; give a file such as {path / 'taskyard.db'}",
            param_hint="--db",
        )
    _check_directory(path, value)
    return f"sqlite+aiosqlite:///{path}"


def _check_sqlite_directory(url: str) -> None:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise click.BadParameter(
            f"{url!r} is neither a database URL nor a file path", param_hint="--db"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_directory(Path(parsed.database), url)


def _check_directory(path: Path, value: str) -> None:
    if not path.parent.is_dir():
        raise click.BadParameter(
            f"the directory of {value} ({path.parent}) does not exist; create it or pick "
            "another path",
            param_hint="--db",
        )


def shown(url: str) -> str:
    """The URL without its password, for messages and banners."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def check_reachable(url: str) -> None:
    """Open and close the database once; any failure is a one-line ClickException."""
    from broker.store.database import probe

    try:
        probe(url)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        raise click.ClickException(
            f"cannot open the database {shown(url)}: {_cause(exc)}"
        ) from None


def _cause(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's wrapping and background links."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.removeprefix("(sqlalchemy.dialects.postgresql.asyncpg.Error) ")
