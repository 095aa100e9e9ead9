"""`taskyard token`: create tokens (printed once; only hashes are kept) and list them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from broker.cli.helpgroup import HelpGroup
from broker.errors import ConfigError
from broker.security import tokens
from broker.security.roles import Role

ROLES = [r.value for r in Role]


@click.group("token", cls=HelpGroup)
def token_group() -> None:
    """Manage the broker's tokens file (docs/security.md)."""


@token_group.command("create", short_help="Add a token to the tokens file and print it once.")
@click.option(
    "--tokens",
    "path",
    type=click.Path(dir_okay=False),
    envvar="TASKYARD_TOKENS",
    required=True,
    help="The tokens file to append to (created if missing, mode 600).",
)
@click.option("--name", required=True, help="The identity; owner of the tasks it creates.")
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice(ROLES), help="Repeatable."
)
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues; repeatable.")
@click.option("--type", "types", multiple=True, help="Workers: only these task types.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text, for scripts.")
def create(
    path: str,
    name: str,
    roles: tuple[str, ...],
    queues: tuple[str, ...],
    types: tuple[str, ...],
    as_json: bool,
) -> None:
    """Append a new token to the file and print it: the only time it is shown.

    Send the broker SIGHUP (or restart it) for the token to take effect.
    """
    token, key_id = tokens.new_token()
    entry = tokens.entry_toml(
        key_id=key_id,
        hashed=tokens.hash_secret(token.split("_", 2)[2]),
        name=name,
        roles=sorted(set(roles)),
        queues=sorted(set(queues)),
        types=sorted(set(types)),
    )
    file = Path(path)
    existing = file.read_text() if file.exists() else ""
    candidate = existing + ("\n" if existing and not existing.endswith("\n\n") else "") + entry
    _check(file, candidate)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(candidate[len(existing) :])
    click.echo(json.dumps({"token": token, "key_id": key_id, "name": name}) if as_json else token)
    click.echo(f"added token {key_id} for {name} to {path}; SIGHUP the broker to use it", err=True)


def _check(file: Path, text: str) -> None:
    """Refuse to write an entry the broker would reject (a bad name, admin with queues…)."""
    try:
        tokens.parse(text, str(file))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@token_group.command("list", short_help="List the identities of a tokens file.")
@click.option(
    "--tokens",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_TOKENS",
    required=True,
    help="The tokens file to read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text, for scripts.")
def list_tokens(path: str, as_json: bool) -> None:
    """Print each identity: token id or certificate subject, name, roles, queues."""
    try:
        credentials = tokens.load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rows = [(f"token {k}", e.principal) for k, e in credentials.tokens.items()]
    rows += [(f"certificate {s}", p) for s, p in credentials.certificates.items()]
    if as_json:
        listed = [
            {
                "identity": where,
                "name": p.name,
                "roles": sorted(p.roles),
                "queues": None if p.queues is None else sorted(p.queues),
                "types": None if p.types is None else sorted(p.types),
            }
            for where, p in rows
        ]
        click.echo(json.dumps(listed, indent=2))
        return
    for where, principal in rows:
        queues = ",".join(sorted(principal.queues)) if principal.queues is not None else "*"
        types = ",".join(sorted(principal.types)) if principal.types is not None else "*"
        roles = ",".join(sorted(principal.roles))
        click.echo(f"{where}\t{principal.name}\troles={roles}\tqueues={queues}\ttypes={types}")
