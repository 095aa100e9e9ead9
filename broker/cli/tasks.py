"""Client commands: submit, get, list, cancel, watch."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

import click

from broker.cli.credentials import connect, credential_options
from worker_sdk import (
    RetryPolicy,
    Task,
    TaskFailed,
    TaskState,
    TaskyardError,
    Timeouts,
)

F = TypeVar("F", bound=Callable[..., Any])

_target_flag = click.option(
    "--target",
    envvar="TASKYARD_TARGET",
    default="127.0.0.1:50051",
    show_default=True,
    help="The broker's host:port.",
)


def target_option(command: F) -> F:
    """--target plus --token, --ca, --cert, --key (broker/cli/credentials.py)."""
    return _target_flag(credential_options(command))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def reports_errors(fn: F) -> F:
    """Turn broker errors into one clear line and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TaskyardError as error:
            click.echo(f"error: {error.message} ({error.reason})", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def parse_when(value: str) -> datetime:
    """An ISO 8601 instant, or a delay like +30s, +5m, +2h, +1d."""
    match = re.fullmatch(r"\+(\d+(?:\.\d+)?)([smhd])", value.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(UTC) + timedelta(seconds=float(match.group(1)) * unit)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither ISO 8601 (2030-01-01T09:00:00+00:00) nor a delay (+30s)"
        ) from None
    return when if when.tzinfo else when.astimezone()


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


def retry_policy(backoff: str | None, non_retryable: tuple[str, ...]) -> RetryPolicy | None:
    if backoff is None and not non_retryable:
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
    )


def parse_payload(value: str | None) -> Any:
    if value is None:
        return None
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as handle:
            value = handle.read()
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None


def task_dict(task: Task) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

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
        "payload": _jsonable(task.payload),
        "result": _jsonable(task.result),
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


def _jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def print_task(task: Task, as_json: bool) -> None:
    data = task_dict(task)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if value not in (None, {}, ""):
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            click.echo(f"{key:>13}: {shown}")


@click.command()
@click.argument("type")
@click.option("--payload", help="JSON payload, or @file.json.")
@click.option("-q", "--queue", help="Queue (default: default).")
@click.option("-p", "--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--run-at", help="ISO 8601 time, or a delay such as +30s.")
@click.option("-l", "--label", "labels", multiple=True, help="key=value, repeatable.")
@click.option("--max-attempts", type=int, help="Attempts a retryable failure may use.")
@click.option("--request-id", help="Idempotency key.")
@click.option("--backoff", help="STRATEGY[:INITIAL[:COEFFICIENT[:MAX]]], e.g. exponential:1s:2:5m.")
@click.option("--non-retryable", multiple=True, help="An error type never retried; repeatable.")
@click.option("--execution-timeout", help="Limit of one attempt, e.g. 5m.")
@click.option("--heartbeat-timeout", help="A silent attempt is taken back after this, e.g. 30s.")
@click.option("--soft-timeout", help="Warn the handler after this, before --execution-timeout.")
@click.option("--expires-in", help="Expire unless started within this of its run time, e.g. 1h.")
@click.option("--wait", "wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, help="Seconds to --wait at most.")
@target_option
@json_option
@reports_errors
def submit(
    type: str,
    payload: str | None,
    queue: str | None,
    priority: int,
    run_at: str | None,
    labels: tuple[str, ...],
    max_attempts: int | None,
    request_id: str | None,
    backoff: str | None,
    non_retryable: tuple[str, ...],
    execution_timeout: str | None,
    heartbeat_timeout: str | None,
    soft_timeout: str | None,
    expires_in: str | None,
    wait: bool,
    timeout: float | None,
    target: str,
    as_json: bool,
) -> None:
    """Submit a task of TYPE."""
    label_map = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--label")
        label_map[key] = value
    with connect(target) as client:
        task = client.submit(
            type,
            parse_payload(payload),
            queue=queue,
            priority=priority,
            run_at=parse_when(run_at) if run_at else None,
            labels=label_map,
            max_attempts=max_attempts,
            request_id=request_id,
            retry_policy=retry_policy(backoff, non_retryable),
            timeouts=Timeouts(
                execution=seconds(execution_timeout, "--execution-timeout"),
                heartbeat=seconds(heartbeat_timeout, "--heartbeat-timeout"),
                soft=seconds(soft_timeout, "--soft-timeout"),
                expiry=seconds(expires_in, "--expires-in"),
            ),
        )
        if not wait:
            click.echo(json.dumps(task_dict(task), indent=2) if as_json else task.id)
            return
        try:
            result = client.wait(task.id, timeout=timeout)
        except TaskFailed as failed:
            print_task(failed.task, as_json)
            sys.exit(1)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        click.echo(json.dumps(_jsonable(result)))


@click.command()
@click.argument("task_id")
@target_option
@json_option
@reports_errors
def get(task_id: str, target: str, as_json: bool) -> None:
    """Show one task."""
    with connect(target) as client:
        print_task(client.get(task_id), as_json)


@click.command("list")
@click.option("-q", "--queue")
@click.option("-s", "--state", type=click.Choice([s.value for s in TaskState]))
@click.option("-t", "--type", "type_")
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@target_option
@json_option
@reports_errors
def list_tasks(
    queue: str | None,
    state: str | None,
    type_: str | None,
    limit: int,
    target: str,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    with connect(target) as client:
        tasks = []
        for task in client.list(
            queue=queue, state=state, type=type_, page_size=min(max(limit, 1), 1000)
        ):
            tasks.append(task)
            if len(tasks) >= limit:
                break
    if as_json:
        click.echo(json.dumps([task_dict(t) for t in tasks], indent=2))
        return
    click.echo(
        f"{'ID':<26}  {'STATE':<10} {'QUEUE':<12} {'TYPE':<20} {'PRI':>4} {'ATT':>3}  CREATED"
    )
    for t in tasks:
        created = t.create_time.strftime("%Y-%m-%d %H:%M:%S") if t.create_time else ""
        click.echo(
            f"{t.id:<26}  {t.state.value:<10} {t.queue:<12.12} {t.type:<20.20} "
            f"{t.priority:>4} {t.attempt:>3}  {created}"
        )


@click.command()
@click.argument("task_id")
@click.option("--reason", default="", help="Recorded as the task's error message.")
@target_option
@json_option
@reports_errors
def cancel(task_id: str, reason: str, target: str, as_json: bool) -> None:
    """Cancel a task (a running one is asked to stop)."""
    with connect(target) as client:
        print_task(client.cancel(task_id, reason), as_json)


@click.command()
@click.argument("task_id")
@target_option
@json_option
@reports_errors
def watch(task_id: str, target: str, as_json: bool) -> None:
    """Follow a task's state and progress until it finishes."""
    with connect(target) as client:
        for task in client.watch(task_id):
            if as_json:
                click.echo(json.dumps(task_dict(task)))
                continue
            line = f"{task.state.value}"
            if task.progress and task.state is TaskState.RUNNING:
                p = task.progress
                line += f" {p.percent:.0f}%"
                if p.total_steps:
                    line += f" step {p.step}/{p.total_steps}"
                if p.message:
                    line += f" {p.message}"
            if task.error and task.done:
                line += f" ({task.error.type}: {task.error.message})"
            click.echo(line)
