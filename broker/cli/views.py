"""Tasks and queues as the CLI shows them: JSON-ready dicts for --json, and text for people.

Text output never shows Python reprs (tuples, dataclasses, True): durations
read `5m`, rates `5 per 1s`, flags `yes`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from worker_sdk import Queue, RetryPolicy, Task, Timeouts


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def when(value: datetime | None) -> str:
    """A time for a table: local, to the second."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def span(value: float | None) -> str:
    """Seconds as people write them: 250ms, 30s, 5m, 1h30m, 7d."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms" if value else "0s"
    out, rest = "", round(value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def task_dict(task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "queue": task.queue,
        "priority": task.priority,
        "state": task.state.value,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "create_time": iso(task.create_time),
        "run_time": iso(task.run_time),
        "start_time": iso(task.start_time),
        "finish_time": iso(task.finish_time),
        "worker_id": task.worker_id or None,
        "labels": task.labels,
        "payload": jsonable(task.payload),
        "result": jsonable(task.result),
    }
    if task.error:
        out["error"] = {"type": task.error.type, "message": task.error.message}
    if task.progress:
        p = task.progress
        out["progress"] = {
            "percent": p.percent,
            "message": p.message,
            "step": p.step,
            "total_steps": p.total_steps,
        }
    if task.cancel_requested:
        out["cancel_requested"] = True
    return out


def print_task(task: Task, as_json: bool) -> None:
    data = task_dict(task)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if value not in (None, {}, ""):
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            click.echo(f"{key:>13}: {shown}")


def queue_dict(queue: Queue) -> dict[str, Any]:
    """Queue settings as JSON: durations in seconds, the rate limit as an object."""
    data = asdict(queue)
    if queue.rate_limit is not None:
        data["rate_limit"] = {"limit": queue.rate_limit[0], "per_seconds": queue.rate_limit[1]}
    if queue.retry_policy is not None:
        for key in ("non_retryable_error_types", "retryable_error_types"):
            data["retry_policy"][key] = list(getattr(queue.retry_policy, key))
    return data


def print_queue(queue: Queue, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(queue_dict(queue), indent=2))
        return
    state = "active"
    if queue.paused:
        state = f"paused — {queue.pause_note}" if queue.pause_note else "paused"
    rows: list[tuple[str, str | None]] = [
        ("name", queue.name),
        ("state", state),
        ("max_concurrency", _number(queue.max_concurrency)),
        ("rate_limit", _rate(queue.rate_limit)),
        ("concurrency_key_limit", _number(queue.concurrency_key_limit)),
        ("max_depth", _number(queue.max_depth)),
        ("retry_policy", retry_text(queue.retry_policy)),
        ("timeouts", timeouts_text(queue.timeouts)),
        ("retention", _pairs((k, span(v)) for k, v in queue.retention.items())),
    ]
    for key, value in rows:
        click.echo(f"{key:>21}: {value if value is not None else '-'}")


def _number(value: int | None) -> str | None:
    return None if value is None else f"{value:,}"


def _rate(rate: tuple[int, float] | None) -> str | None:
    return None if rate is None else f"{rate[0]:,} per {span(rate[1])}"


def _pairs(items: Iterable[tuple[str, str]]) -> str | None:
    return ", ".join(f"{k} {v}" for k, v in items) or None


def retry_text(policy: RetryPolicy | None) -> str | None:
    """`3 attempts, exponential backoff 1s x2 up to 5m, jitter 20%, 10 lease losses`."""
    if policy is None:
        return None
    parts = []
    if policy.max_attempts:
        parts.append(f"{policy.max_attempts} attempts")
    if policy.strategy:
        backoff = f"{policy.strategy} backoff {span(_seconds(policy.initial_backoff))}"
        if policy.strategy == "exponential" and policy.backoff_coefficient:
            backoff += f" x{policy.backoff_coefficient:g}"
        if policy.max_backoff:
            backoff += f" up to {span(_seconds(policy.max_backoff))}"
        parts.append(backoff)
    if policy.jitter:
        parts.append(f"jitter {policy.jitter:.0%}")
    if policy.max_lease_losses:
        parts.append(f"{policy.max_lease_losses} lease losses")
    if policy.non_retryable_error_types:
        parts.append("never retried: " + ", ".join(policy.non_retryable_error_types))
    if policy.retryable_error_types:
        parts.append("retried only: " + ", ".join(policy.retryable_error_types))
    return ", ".join(parts) or None


def timeouts_text(timeouts: Timeouts | None) -> str | None:
    if timeouts is None:
        return None
    return _pairs(
        (name, span(_seconds(getattr(timeouts, name))))
        for name in ("execution", "heartbeat", "soft", "expiry")
        if getattr(timeouts, name) is not None
    )


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
