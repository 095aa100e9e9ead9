"""What every client command shares: --target and --json, input parsing, error lines.

Parsers raise `click.BadParameter` naming the option, so that a typo is one
line on stderr (see broker/cli/errors.py), never a traceback.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from broker.cli.credentials import credential_options
from broker.cli.errors import fail, for_people
from worker_sdk import RetryPolicy, TaskyardError
from worker_sdk._payload import to_payload

F = TypeVar("F", bound=Callable[..., Any])

# Protobuf int32 fields (priority): a larger number cannot even be encoded.
INT32 = click.IntRange(-(2**31), 2**31 - 1)


def _attempts(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(
            f"must be 1 (never retry) or more, got {value}; a 0 would silently mean the "
            "queue's default, so leave the option out for that"
        )
    return value


def max_attempts_option(help: str) -> Callable[[F], F]:
    """--max-attempts, refusing 0 and below rather than letting 0 become the default."""
    return click.option("--max-attempts", type=int, callback=_attempts, help=help)


_target_flag = click.option(
    "--target",
    envvar="TASKYARD_TARGET",
    show_envvar=True,
    default="127.0.0.1:50051",
    show_default=True,
    help="The broker's host:port; set TASKYARD_TARGET to avoid repeating it.",
)


def target_option(command: F) -> F:
    """--target plus --token, --ca, --cert, --key (broker/cli/credentials.py)."""
    return _target_flag(credential_options(command))


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of text, for scripts."
)


def reports_errors(fn: F) -> F:
    """Turn broker errors into one clear line and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TaskyardError as error:
            fail(f"{for_people(error.message)} ({error.reason})")

    return wrapper  # type: ignore[return-value]


def exit_with(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def parse_when(value: str, option: str = "--run-at") -> datetime:
    """An ISO 8601 instant, or a delay like +30s, +5m, +2h, +1d."""
    match = re.fullmatch(r"\+(\d+(?:\.\d+)?)([smhd])", value.strip())
    try:
        if match:
            unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
            return datetime.now(UTC) + timedelta(seconds=float(match.group(1)) * unit)
        when = datetime.fromisoformat(value)
        return when if when.tzinfo else when.astimezone()
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time between years 1 and 9999 "
            "(2030-01-01T09:00:00+00:00) nor a delay (+30s, +5m, +2h, +1d)",
            param_hint=option,
        ) from None


def seconds(value: str | None, option: str) -> float | None:
    """A duration such as 30s, 5m or 250ms, in seconds."""
    if value is None:
        return None
    from broker.config_file import parse_duration
    from broker.errors import ConfigError

    try:
        return parse_duration(value, option) / 1_000_000
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def retry_policy(
    backoff: str | None, non_retryable: tuple[str, ...], retry_on: tuple[str, ...] = ()
) -> RetryPolicy | None:
    if backoff is None and not non_retryable and not retry_on:
        return None
    parts = (backoff or "").split(":") if backoff else []
    strategy = parts[0] if parts else None
    if strategy is not None and strategy not in ("fixed", "linear", "exponential"):
        raise click.BadParameter(
            f"{strategy!r} is not fixed, linear or exponential", param_hint="--backoff"
        )
    try:
        coefficient = float(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise click.BadParameter(f"{parts[2]!r} is not a number", param_hint="--backoff") from None
    return RetryPolicy(
        strategy=strategy,
        initial_backoff=seconds(parts[1], "--backoff") if len(parts) > 1 else None,
        backoff_coefficient=coefficient,
        max_backoff=seconds(parts[3], "--backoff") if len(parts) > 3 else None,
        non_retryable_error_types=non_retryable,
        retryable_error_types=retry_on,
    )


def parse_payload(value: str | None) -> Any:
    """JSON text, or @file holding it; strict JSON (no NaN, no Infinity, no 1e400)."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as handle:
                value = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise click.BadParameter(
                f"cannot read {value[1:]!r}: {reason}", param_hint="--payload"
            ) from None
    try:
        data = json.loads(value, parse_constant=_not_json, parse_float=_finite)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None
    try:
        to_payload(data)  # what the SDK would refuse later: huge integers, lone surrogates
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--payload") from None
    return data


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is beyond what a JSON number holds")
    return number


def parse_labels(items: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--label")
        labels[key] = value
    return labels


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
