"""`--token`, `--ca`, `--cert`, `--key` for every client command (TASKYARD_TOKEN, TASKYARD_CA, …).

The flags are read into the click context, so commands keep their signatures
and open their client with `connect(target)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from broker.cli import secret_input
from worker_sdk import SyncClient

F = TypeVar("F", bound=Callable[..., Any])
_KEY = "taskyard.credentials"
_FILE = click.Path(exists=True, dir_okay=False)


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if param.name is not None:
        ctx.meta.setdefault(_KEY, {})[param.name] = value
        typed = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        ctx.meta[_KEY][f"{param.name}_typed"] = typed
        if param.name == "token" and value and typed:
            secret_input.warn(
                "a token given with --token is visible to every user of this machine (ps); "
                "use TASKYARD_TOKEN or --token-file instead"
            )
    return value


def credential_options(command: F) -> F:
    """Add the connection-security flags (not passed to the command)."""
    options = [
        click.option(
            "--token",
            expose_value=False,
            callback=_store,
            envvar="TASKYARD_TOKEN",
            show_envvar=True,
            help="Bearer token for a broker that requires one. On the command line it shows "
            "in ps: prefer TASKYARD_TOKEN or --token-file.",
        ),
        click.option(
            "--token-file",
            expose_value=False,
            callback=_store,
            type=_FILE,
            envvar="TASKYARD_TOKEN_FILE",
            show_envvar=True,
            help="Read the bearer token from this file.",
        ),
        click.option(
            "--ca",
            "ca_file",
            expose_value=False,
            callback=_store,
            type=_FILE,
            envvar="TASKYARD_CA",
            show_envvar=True,
            help="PEM CA that signed the broker's certificate; connect with TLS.",
        ),
        click.option(
            "--cert",
            "cert_file",
            expose_value=False,
            callback=_store,
            type=_FILE,
            envvar="TASKYARD_CERT",
            show_envvar=True,
            help="PEM client certificate for mutual TLS (with --key).",
        ),
        click.option(
            "--key",
            "key_file",
            expose_value=False,
            callback=_store,
            type=_FILE,
            envvar="TASKYARD_KEY",
            show_envvar=True,
            help="PEM private key of --cert.",
        ),
        click.option(
            "--tls",
            expose_value=False,
            callback=_store,
            is_flag=True,
            envvar="TASKYARD_TLS",
            show_envvar=True,
            help="Connect with TLS using the system's CAs (implied by --ca).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def credentials() -> dict[str, Any]:
    """The flags' values as keyword arguments of SyncClient, Client and Worker."""
    ctx = click.get_current_context()
    values = ctx.meta.get(_KEY, {})
    if (values.get("cert_file") is None) != (values.get("key_file") is None):
        raise click.UsageError("--cert and --key go together")
    token = values.get("token")
    if values.get("token_file") is not None:
        if token and values.get("token_typed"):
            raise click.UsageError("give --token or --token-file, not both")
        token = secret_input.from_file(values["token_file"], "--token-file")
    return {
        "token": token,
        "ca_file": values.get("ca_file"),
        "cert_file": values.get("cert_file"),
        "key_file": values.get("key_file"),
        "tls": bool(values.get("tls")),
    }


def connect(target: str) -> SyncClient:
    """A SyncClient for `target` with the command's credentials."""
    try:
        return SyncClient(target, **credentials())
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
