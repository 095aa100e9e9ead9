"""Secrets belong in the environment or a file, not on a command line.

Every user of the machine can read a process's arguments (`ps`,
/proc/PID/cmdline), so a database password in `--db` or a token in `--token`
is exposed for as long as the process runs. Each such flag has an
environment variable and a `*-file` twin; given on the command line anyway,
it is used, with a warning on stderr.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import click
from click.core import ParameterSource


def from_file(path: str, flag: str) -> str:
    """The secret in a file: its content without the trailing newline."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=flag) from None
    if not value:
        raise click.BadParameter(f"{path} is empty", param_hint=flag)
    return value


def on_command_line(name: str) -> bool:
    """Whether the parameter `name` of the running command was typed as an argument."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (a plain SQLite path never does).

    urllib, not SQLAlchemy: the worker and client commands import this module,
    and their install has no SQLAlchemy."""
    if "://" not in url:
        return False
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def warn(message: str) -> None:
    click.echo(f"WARNING: {message}", err=True)


def database_secret(db: str, db_file: str | None, flag: str = "--db") -> str:
    """`--db`, or the URL in `--db-file`; warns about a password typed on the command line."""
    if db_file is not None:
        if on_command_line("db"):
            raise click.UsageError(f"give {flag} or {flag}-file, not both")
        return from_file(db_file, f"{flag}-file")
    if on_command_line("db") and has_password(db):
        warn(
            f"the password in {flag} is visible to every user of this machine (ps); "
            f"use TASKYARD_DB or {flag}-file instead"
        )
    return db
