"""The broker's commands in a client-only install (`pip install taskyard` without [broker]).

The SDK and the client commands need only grpcio, protobuf, pydantic and click; `taskyard
broker`, `dev` and `db` need the broker's dependencies too. Without them those commands
still show in `taskyard --help` and say what to install, instead of a traceback.
"""

from __future__ import annotations

import importlib.util

import click

# What the broker imports beyond the client side's dependencies (pyproject's [broker]).
BROKER_MODULES = ("sqlalchemy", "alembic", "grpc_health", "grpc_reflection", "croniter", "yaml")


def broker_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in BROKER_MODULES)


def missing(name: str, short_help: str) -> click.Command:
    """A stand-in for a broker command that says how to get the real one."""

    @click.command(
        name,
        short_help=short_help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    def command() -> None:
        raise click.ClickException(
            f"`taskyard {name}` needs the broker's dependencies, which this install lacks: "
            "pip install 'taskyard[broker]'"
        )

    return command
