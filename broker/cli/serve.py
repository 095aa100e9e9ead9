"""`taskyard broker` and `taskyard db`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from broker.cli import secret_input
from broker.cli.dburl import check_reachable, database_url
from broker.cli.helpgroup import HelpGroup
from broker.cli.security_options import security_options, security_settings
from broker.config import Settings
from broker.errors import ConfigError

DEFAULTS = Settings()


def _logging(level: str, json_lines: bool = False) -> None:
    from broker import logs

    logs.configure(level, json_lines=json_lines)


@click.command("broker")
@click.option(
    "--listen",
    envvar="TASKYARD_LISTEN",
    default=DEFAULTS.listen,
    show_default=True,
    help="host:port to serve gRPC on; port 0 picks a free port.",
)
@click.option(
    "--db",
    envvar="TASKYARD_DB",
    show_envvar=True,
    default=DEFAULTS.db,
    show_default=True,
    help="A SQLite file (a plain path such as data/taskyard.db) or a database URL: "
    "sqlite+aiosqlite:///file.db or postgresql://user@host/db. A password here shows in "
    "ps: use TASKYARD_DB or --db-file for one.",
)
@click.option(
    "--db-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_DB_FILE",
    show_envvar=True,
    help="Read the database URL from this file (keeps a password out of ps).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_CONFIG",
    help="TOML file with retry, timeout and retention defaults (docs/reliability.md).",
)
@click.option(
    "--lease-duration",
    type=float,
    default=DEFAULTS.lease_duration_s,
    show_default=True,
    help="Default heartbeat timeout: seconds a lease lasts without a heartbeat.",
)
@click.option(
    "--sweep-interval",
    type=float,
    default=DEFAULTS.sweep_interval_s,
    show_default=True,
    help="Seconds between expired-lease sweeps.",
)
@click.option(
    "--max-attempts",
    type=int,
    default=DEFAULTS.default_max_attempts,
    show_default=True,
    help="Default attempts for a task that sets none.",
)
@click.option(
    "--max-payload-bytes",
    type=int,
    default=DEFAULTS.limits.max_payload_bytes,
    show_default=True,
    help="Largest payload or result accepted.",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=DEFAULTS.shutdown_grace_s,
    show_default=True,
    help="Seconds in-flight calls get on SIGTERM.",
)
@click.option(
    "--restart-grace",
    type=float,
    default=DEFAULTS.restart_grace_s,
    show_default=True,
    help="Seconds leases from before a restart wait for their workers (at least --lease-duration).",
)
@click.option(
    "--retention-interval",
    type=float,
    default=DEFAULTS.retention_interval_s,
    show_default=True,
    help="Seconds between retention sweeps.",
)
@click.option("--auto-migrate", is_flag=True, help="Upgrade an older schema on start.")
@click.option(
    "--sqlite-synchronous",
    type=click.Choice(["NORMAL", "FULL"]),
    default="NORMAL",
    show_default=True,
    help="FULL survives power loss at the cost of commit latency.",
)
@click.option(
    "--sqlite-max-bytes",
    type=click.IntRange(min=1),
    help="Cap the SQLite file at this size: writes that would grow it further are refused "
    "with STORAGE_FULL, as on a full disk.",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False),
    help="Write the bound port here once serving (for --listen host:0).",
)
@click.option(
    "--schedules",
    "schedules_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_SCHEDULES",
    help="YAML or TOML file of schedules, reconciled at start (docs/schedules.md).",
)
@click.option(
    "--templates",
    "templates_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_TEMPLATES",
    help="YAML or TOML file of workflow templates, registered at start (docs/workflows.md).",
)
@click.option(
    "--metrics-listen",
    envvar="TASKYARD_METRICS_LISTEN",
    help="PORT (on 127.0.0.1) or HOST:PORT for a Prometheus scrape endpoint (/metrics); "
    "port 0 picks a free port. Another host than loopback shows queue and type names and "
    "counts to whoever reaches it: add --metrics-token.",
)
@click.option(
    "--metrics-token",
    envvar="TASKYARD_METRICS_TOKEN",
    show_envvar=True,
    help="Require 'Authorization: Bearer <token>' to scrape /metrics (or --metrics-token-file).",
)
@click.option(
    "--metrics-token-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_METRICS_TOKEN_FILE",
    help="Read the scrape token from this file.",
)
@click.option(
    "--http-listen",
    envvar="TASKYARD_HTTP_LISTEN",
    help="host:port to serve the same API over HTTP/1.1 + JSON (Connect protocol; docs/http.md); "
    "off unless given. Port 0 picks a free port.",
)
@click.option(
    "--event-window",
    type=click.IntRange(min=1),
    default=DEFAULTS.event_window,
    show_default=True,
    help="Events kept for WatchEvents subscribers to resume from (docs/events.md).",
)
@click.option(
    "--otlp-endpoint",
    envvar="TASKYARD_OTLP_ENDPOINT",
    help="Send metrics and dispatch spans over OTLP to this URL (OTEL_EXPORTER_OTLP_* also work).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe log record written to stderr.",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@security_options
def broker_command(
    listen: str,
    db: str,
    db_file: str | None,
    config_path: str | None,
    lease_duration: float,
    sweep_interval: float,
    max_attempts: int,
    max_payload_bytes: int,
    shutdown_grace: float,
    restart_grace: float,
    retention_interval: float,
    auto_migrate: bool,
    sqlite_synchronous: str,
    sqlite_max_bytes: int | None,
    port_file: str | None,
    schedules_path: str | None,
    templates_path: str | None,
    metrics_listen: str | None,
    metrics_token: str | None,
    metrics_token_file: str | None,
    http_listen: str | None,
    event_window: int,
    otlp_endpoint: str | None,
    log_level: str,
    log_json: bool,
    **security: Any,
) -> None:
    """Run the broker (SQLite file by default)."""
    from dataclasses import replace

    from broker import app

    for name, value in (
        ("--lease-duration", lease_duration),
        ("--sweep-interval", sweep_interval),
        ("--retention-interval", retention_interval),
        ("--restart-grace", restart_grace),
    ):
        if value <= 0:
            raise click.BadParameter(f"{name} must be positive, got {value}")
    db = database_url(secret_input.database_secret(db, db_file))
    check_reachable(db)
    if metrics_token_file is not None:
        metrics_token = secret_input.from_file(metrics_token_file, "--metrics-token-file")
    elif metrics_token and secret_input.on_command_line("metrics_token"):
        secret_input.warn("--metrics-token is visible in ps; use TASKYARD_METRICS_TOKEN or a file")
    settings = Settings(
        listen=listen,
        db=db,
        lease_duration_s=lease_duration,
        sweep_interval_s=sweep_interval,
        default_max_attempts=max_attempts,
        shutdown_grace_s=shutdown_grace,
        restart_grace_s=restart_grace,
        retention_interval_s=retention_interval,
        config_path=config_path,
        auto_migrate=auto_migrate,
        sqlite_synchronous=sqlite_synchronous,
        sqlite_max_bytes=sqlite_max_bytes,
        port_file=port_file,
        schedules_path=schedules_path,
        templates_path=templates_path,
        log_level=log_level,
        log_json=log_json,
        metrics_listen=metrics_listen,
        metrics_token=metrics_token or None,
        http_listen=http_listen or None,
        event_window=event_window,
        otlp_endpoint=otlp_endpoint,
        **security_settings(
            security, replace(DEFAULTS.limits, max_payload_bytes=max_payload_bytes)
        ),
    )
    _logging(log_level, log_json)
    try:
        asyncio.run(app.run(settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("db", cls=HelpGroup)
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.option(
    "--db",
    envvar="TASKYARD_DB",
    show_envvar=True,
    default=DEFAULTS.db,
    show_default=True,
    help="A SQLite file (plain path) or a database URL, as for `taskyard broker`; a "
    "password here shows in ps: use TASKYARD_DB or --db-file.",
)
@click.option(
    "--db-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TASKYARD_DB_FILE",
    show_envvar=True,
    help="Read the database URL from this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text, for scripts.")
def db_upgrade(db: str, db_file: str | None, as_json: bool) -> None:
    """Migrate the schema to the revision this version needs."""
    from broker.store import database

    db = database_url(secret_input.database_secret(db, db_file))
    check_reachable(db)

    async def _run() -> tuple[str | None, str | None]:
        handle = database.open_database(db)
        try:
            return await database.upgrade(handle)
        finally:
            await handle.dispose()

    try:
        before, after = asyncio.run(_run())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"before": before, "after": after}))
        return
    click.echo(f"schema: {before or 'empty'} -> {after}")
