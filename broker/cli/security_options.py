"""`taskyard broker` flags for TLS, tokens, open services and input limits (docs/security.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from broker.config import Limits, Security

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULT = Limits()
_FILE = click.Path(exists=True, dir_okay=False)

# (flag, Limits field, type, help); every one is also TASKYARD_<FLAG> in the environment.
LIMIT_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--max-batch", "max_batch", click.IntRange(1), "Most tasks in one BatchCreateTasks."),
    (
        "--max-string",
        "max_string",
        click.IntRange(1, 200),
        "Longest type, queue, id or label key (the columns hold 200).",
    ),
    ("--max-labels", "max_labels", click.IntRange(0), "Most labels on one task."),
    ("--max-label-value", "max_label_value", click.IntRange(0), "Longest label value."),
    ("--max-page-size", "max_page_size", click.IntRange(1), "Largest page a list returns."),
    ("--max-credits", "max_credits", click.IntRange(1), "Most credits one Lease message grants."),
    (
        "--max-lease-items",
        "max_lease_items",
        click.IntRange(500),
        "Most heartbeats, completions or releases in one Lease message (SDKs send 500), "
        "and most leases a worker's hello may re-adopt.",
    ),
    (
        "--max-message-bytes",
        "max_message_bytes",
        click.IntRange(0),
        "Largest gRPC message received or sent; 0 derives both from the other limits "
        "(docs/security.md).",
    ),
    (
        "--max-batch-bytes",
        "max_batch_bytes",
        click.IntRange(1024),
        "Largest BatchCreateTasks request or Lease message, in bytes.",
    ),
    (
        "--max-page-bytes",
        "max_page_bytes",
        click.IntRange(1024),
        "Largest ListTasks reply in bytes: a FULL list pages by size too.",
    ),
    (
        "--max-streams-per-identity",
        "max_streams_per_identity",
        click.IntRange(0),
        "Open Lease/WatchTask streams one identity may hold (0 = unlimited).",
    ),
    (
        "--submit-rate",
        "submit_rate",
        click.FloatRange(0),
        "Tasks per second one identity may submit, sustained (0 = unlimited).",
    ),
    (
        "--submit-burst",
        "submit_burst",
        click.IntRange(1),
        "Tasks one identity may submit at once above the rate.",
    ),
    (
        "--submit-bytes-rate",
        "submit_bytes_rate",
        click.FloatRange(0),
        "Request bytes per second one identity may submit, sustained (0 = unlimited).",
    ),
    (
        "--submit-bytes-burst",
        "submit_bytes_burst",
        click.IntRange(1),
        "Request bytes one identity may submit at once above the byte rate.",
    ),
    (
        "--max-schedules-per-identity",
        "max_schedules_per_identity",
        click.IntRange(0),
        "Schedules one identity may own (0 = unlimited).",
    ),
    (
        "--max-streams-per-connection",
        "max_streams_per_connection",
        click.IntRange(1),
        "Concurrent HTTP/2 streams (calls) on one connection; more wait in the client.",
    ),
    (
        "--max-open-streams",
        "max_open_streams",
        click.IntRange(0),
        "Health and reflection streams open without a token, all callers together (0 = unlimited).",
    ),
    (
        "--refusal-log-interval",
        "refusal_log_interval_s",
        click.FloatRange(0),
        "Seconds between 'refused' log lines for one peer; the rest are counted.",
    ),
    (
        "--task-log-lines",
        "task_log_lines",
        click.IntRange(0),
        "Log records (ctx.log) stored per task attempt; the rest are dropped, with a notice.",
    ),
    (
        "--task-log-bytes",
        "task_log_bytes",
        click.IntRange(0),
        "Bytes of log text stored per task attempt; the rest are dropped, with a notice.",
    ),
]


def security_options(command: F) -> F:
    """Add the TLS, token, open-service and limit flags; they arrive as **kwargs."""
    options = [
        click.option(
            "--tls-cert",
            type=_FILE,
            envvar="TASKYARD_TLS_CERT",
            help="PEM certificate (chain) to serve TLS with; needs --tls-key.",
        ),
        click.option("--tls-key", type=_FILE, envvar="TASKYARD_TLS_KEY", help="PEM private key."),
        click.option(
            "--tls-client-ca",
            type=_FILE,
            envvar="TASKYARD_TLS_CLIENT_CA",
            help="Require client certificates signed by this CA (mutual TLS).",
        ),
        click.option(
            "--tokens",
            "tokens_path",
            type=_FILE,
            envvar="TASKYARD_TOKENS",
            help="Tokens file: identities, roles, hashed tokens; reloaded on SIGHUP. "
            "Without it there is no authentication.",
        ),
        click.option(
            "--open-health/--no-open-health",
            default=True,
            show_default=True,
            help="Serve grpc.health.v1 to callers without a token.",
        ),
        click.option(
            "--open-reflection/--no-open-reflection",
            default=True,
            show_default=True,
            help="Serve server reflection to callers without a token.",
        ),
    ]
    for flag, name, kind, text in LIMIT_FLAGS:
        options.append(
            click.option(
                flag,
                name,
                type=kind,
                default=getattr(_DEFAULT, name),
                show_default=True,
                envvar="TASKYARD_" + flag[2:].upper().replace("-", "_"),
                help=text,
            )
        )
    for option in reversed(options):
        command = option(command)
    return command


def security_settings(values: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The `limits` and `security` arguments of Settings from the flags' values."""
    limit_values = {name: values[name] for _, name, _, _ in LIMIT_FLAGS}
    if 0 < limit_values["max_message_bytes"] < 1024:
        raise click.BadParameter(
            "give 0 (derived from the other limits) or at least 1024",
            param_hint="--max-message-bytes",
        )
    security = Security(
        tls_cert=values["tls_cert"],
        tls_key=values["tls_key"],
        tls_client_ca=values["tls_client_ca"],
        tokens_path=values["tokens_path"],
        open_health=values["open_health"],
        open_reflection=values["open_reflection"],
    )
    return {"limits": replace(limits, **limit_values), "security": security}
