"""The broker's optional TOML file (`--config`): defaults for retries, timeouts, retention.

    [defaults.retry]            # also under [queues.NAME.retry] and [types."NAME".retry]
    max_attempts = 5
    strategy = "exponential"    # fixed | linear | exponential
    initial_backoff = "2s"
    backoff_coefficient = 2.0
    max_backoff = "10m"
    jitter = 0.2
    non_retryable_error_types = ["ValueError"]
    retryable_error_types = []  # not empty: only these types are retried
    max_lease_losses = 10

    [defaults.timeouts]         # also per queue and per type
    execution = "1h"
    heartbeat = "10s"
    soft = "55m"
    expiry = "1d"

    [defaults.retention]        # also per queue
    succeeded = "24h"
    failed = "7d"               # failed, dead and expired tasks
    cancelled = "24h"
    request_ids = "24h"         # idempotency keys (defaults section only)

Durations are strings with a unit: 250ms, 30s, 5m, 2h, 7d. Every error names
the file, the table and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.core.options import Defaults, TaskOptions, Timeouts
from broker.core.retention import Retention, RetentionPolicy
from broker.core.retry import BackoffStrategy, RetryPolicy
from broker.errors import ConfigError, InvalidArgument

_UNITS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


@dataclass(frozen=True, slots=True)
class FileConfig:
    defaults: Defaults
    retention: RetentionPolicy


def parse_duration(text: str, where: str) -> int:
    """A duration such as '30s' in microseconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"{where}: {text!r} is not a duration such as 250ms, 30s, 5m, 2h or 7d")
    return round(float(match.group(1)) * _UNITS[match.group(2)])


def load(path: str | None, *, heartbeat_us: int, max_attempts: int) -> FileConfig:
    """Read the file (or none) over the command line's defaults."""
    base = Defaults(
        retry=RetryPolicy(max_attempts=max_attempts), timeouts=Timeouts(heartbeat_us=heartbeat_us)
    )
    if path is None:
        return FileConfig(base, RetentionPolicy())
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return _build(data, path, base)


def _build(data: dict[str, Any], path: str, base: Defaults) -> FileConfig:
    _only(data, {"defaults", "queues", "types"}, path)
    section = data.get("defaults", {})
    _only(section, {"retry", "timeouts", "retention"}, f"{path} [defaults]")
    own = _options(section, f"{path} [defaults]")
    retry = replace(base.retry, **_retry_fields(own))
    timeouts = Timeouts(
        execution_us=own.execution_timeout_us,
        heartbeat_us=own.heartbeat_timeout_us or base.timeouts.heartbeat_us,
        soft_us=own.soft_timeout_us,
        expiry_us=own.expiry_us,
    )
    queues = {
        name: _options(table, f"{path} [queues.{name}]")
        for name, table in data.get("queues", {}).items()
    }
    types = {
        name: _options(table, f"{path} [types.{name}]")
        for name, table in data.get("types", {}).items()
    }
    defaults = Defaults(retry=retry, timeouts=timeouts, queues=queues, types=types)
    _check(defaults, path)
    retention = RetentionPolicy(
        default=_retention(section.get("retention", {}), Retention(), f"{path} [defaults]"),
        queues={
            name: _retention(table.get("retention", {}), Retention(), f"{path} [queues.{name}]")
            for name, table in data.get("queues", {}).items()
            if "retention" in table
        },
        request_id_us=_duration_or(
            section.get("retention", {}), "request_ids", RetentionPolicy().request_id_us,
            f"{path} [defaults.retention]",
        ),
    )  # fmt: skip
    return FileConfig(defaults, retention)


def _check(defaults: Defaults, path: str) -> None:
    """Resolve every queue and type once, so a bad default fails at start, not per task."""
    names = [("queue", q, "default") for q in defaults.queues] + [
        ("type", "default", t) for t in defaults.types
    ]
    for kind, queue, type_ in [("defaults", "default", "default"), *names]:
        try:
            defaults.resolve(TaskOptions(), queue=queue, type_=type_)
        except InvalidArgument as exc:
            label = kind if kind == "defaults" else f"{kind} {queue if kind == 'queue' else type_}"
            raise ConfigError(f"{path}: {label}: {exc.message}") from None


def _options(table: dict[str, Any], where: str) -> TaskOptions:
    _only(table, {"retry", "timeouts", "retention"}, where)
    retry = table.get("retry", {})
    _only(retry, set(_RETRY_KEYS), f"{where}.retry")
    timeouts = table.get("timeouts", {})
    _only(timeouts, {"execution", "heartbeat", "soft", "expiry"}, f"{where}.timeouts")
    values: dict[str, Any] = {}
    for key, convert in _RETRY_KEYS.items():
        if key in retry:
            values[_RETRY_FIELD[key]] = convert(retry[key], f"{where}.retry.{key}")
    for key, field_name in _TIMEOUT_FIELDS.items():
        if key in timeouts:
            values[field_name] = parse_duration(timeouts[key], f"{where}.timeouts.{key}")
    return TaskOptions(**values)


def _retention(table: dict[str, Any], base: Retention, where: str) -> Retention:
    _only(table, {"succeeded", "failed", "cancelled", "request_ids"}, f"{where}.retention")
    return Retention(
        succeeded_us=_duration_or(table, "succeeded", base.succeeded_us, f"{where}.retention"),
        failed_us=_duration_or(table, "failed", base.failed_us, f"{where}.retention"),
        cancelled_us=_duration_or(table, "cancelled", base.cancelled_us, f"{where}.retention"),
    )


def _duration_or(table: dict[str, Any], key: str, default: int, where: str) -> int:
    return parse_duration(table[key], f"{where}.{key}") if key in table else default


def _only(table: object, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _strategy(value: Any, where: str) -> BackoffStrategy:
    try:
        return BackoffStrategy(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not fixed, linear or exponential") from None


def _strings(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return frozenset(value)


_RETRY_KEYS: dict[str, Any] = {
    "max_attempts": _int,
    "strategy": _strategy,
    "initial_backoff": parse_duration,
    "backoff_coefficient": _float,
    "max_backoff": parse_duration,
    "jitter": _float,
    "non_retryable_error_types": _strings,
    "retryable_error_types": _strings,
    "max_lease_losses": _int,
}
_RETRY_FIELD = {
    "max_attempts": "max_attempts",
    "strategy": "strategy",
    "initial_backoff": "initial_backoff_us",
    "backoff_coefficient": "backoff_coefficient",
    "max_backoff": "max_backoff_us",
    "jitter": "jitter",
    "non_retryable_error_types": "non_retryable_error_types",
    "retryable_error_types": "retryable_error_types",
    "max_lease_losses": "max_lease_losses",
}
_TIMEOUT_FIELDS = {
    "execution": "execution_timeout_us",
    "heartbeat": "heartbeat_timeout_us",
    "soft": "soft_timeout_us",
    "expiry": "expiry_us",
}


def _retry_fields(options: TaskOptions) -> dict[str, Any]:
    return {
        name: getattr(options, name)
        for name in _RETRY_FIELD.values()
        if getattr(options, name) is not None
    }


__all__ = ["FileConfig", "RetryPolicy", "load", "parse_duration"]
