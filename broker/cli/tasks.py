"""Client commands: submit, get, list, cancel, watch."""

from __future__ import annotations

import json
import re
import shlex
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from broker.cli.common import (
    INT32,
    exit_with,
    json_option,
    max_attempts_option,
    parse_labels,
    parse_payload,
    parse_when,
    reports_errors,
    retry_policy,
    seconds,
    target_option,
)
from broker.cli.credentials import connect
from broker.cli.hints import WAITING, why_idle
from broker.cli.views import jsonable, print_task, task_dict, when
from broker.cli.watching import follow
from worker_sdk import SyncClient, Task, TaskFailed, TaskState, Timeouts


def note_if_idle(client: SyncClient, task: Task) -> bool:
    """Say on stderr when nothing will run the task (no worker, paused queue)."""
    if (reason := why_idle(client, task)) is None:
        return False
    click.echo(f"note: task {task.id} is {task.state.value}: {reason}", err=True)
    return True


@click.command(short_help="Submit a task; --wait prints its result.")
@click.argument("type")
@click.option("--payload", help="JSON payload, or @file.json to read it from a file.")
@click.option("-q", "--queue", help="Queue (default: default).")
@click.option(
    "-p", "--priority", type=INT32, default=0, show_default=True, help="Higher runs first."
)
@click.option("--run-at", help="ISO 8601 time, or a delay such as +30s.")
@click.option("-l", "--label", "labels", multiple=True, help="key=value, repeatable.")
@max_attempts_option("Attempts in all, counting the first (1: never retry). Default: the queue's.")
@click.option("--request-id", help="Idempotency key: repeating it returns the first task.")
@click.option("--backoff", help="STRATEGY[:INITIAL[:COEFFICIENT[:MAX]]], e.g. exponential:1s:2:5m.")
@click.option("--non-retryable", multiple=True, help="An error type never retried; repeatable.")
@click.option(
    "--retry-on",
    multiple=True,
    help="Retry only this error type (others fail at once); repeatable.",
)
@click.option("--execution-timeout", help="Limit of one attempt, e.g. 5m.")
@click.option("--heartbeat-timeout", help="A silent attempt is taken back after this, e.g. 30s.")
@click.option("--soft-timeout", help="Warn the handler after this, before --execution-timeout.")
@click.option("--expires-in", help="Expire unless started within this of its run time, e.g. 1h.")
@click.option("--wait", "wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to --wait at most (default: no limit).",
)
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
    retry_on: tuple[str, ...],
    execution_timeout: str | None,
    heartbeat_timeout: str | None,
    soft_timeout: str | None,
    expires_in: str | None,
    wait: bool,
    timeout: float | None,
    target: str,
    as_json: bool,
) -> None:
    """Submit a task of TYPE and print its id (or, with --wait, its result).

    With --wait the exit status is 0 once the task succeeded and 1 if it
    failed, was cancelled or expired, or --timeout passed first.
    """
    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "run_at": parse_when(run_at) if run_at else None,
        "labels": parse_labels(labels),
        "max_attempts": max_attempts,
        "request_id": request_id,
        "retry_policy": retry_policy(backoff, non_retryable, retry_on),
        "timeouts": Timeouts(
            execution=seconds(execution_timeout, "--execution-timeout"),
            heartbeat=seconds(heartbeat_timeout, "--heartbeat-timeout"),
            soft=seconds(soft_timeout, "--soft-timeout"),
            expiry=seconds(expires_in, "--expires-in"),
        ),
    }
    data = parse_payload(payload)
    with connect(target) as client:
        task = client.submit(type, data, **options)
        if not wait:
            click.echo(json.dumps(task_dict(task), indent=2) if as_json else task.id)
            return
        noted = note_if_idle(client, task)
        _wait(client, task, timeout, as_json, noted=noted)


def _wait(
    client: SyncClient, task: Task, timeout: float | None, as_json: bool, *, noted: bool
) -> None:
    try:
        result = client.wait(task.id, timeout=timeout)
    except TaskFailed as failed:
        print_task(failed.task, as_json)
        sys.exit(1)
    except TimeoutError:
        current = client.get(task.id, full=False)
        message = f"task {task.id} did not finish within {timeout:g}s; it is {current.state.value}"
        if (reason := why_idle(client, current)) is not None:
            message += " (see the note above)" if noted else f": {reason}"
        exit_with(message)
    click.echo(json.dumps(jsonable(result)))


@click.command()
@click.argument("task_id")
@target_option
@json_option
@reports_errors
def get(task_id: str, target: str, as_json: bool) -> None:
    """Show one task, with its payload and result."""
    with connect(target) as client:
        task = client.get(task_id)
        print_task(task, as_json)
        note_if_idle(client, task)


@click.command("list")
@click.option("-q", "--queue", help="Only tasks of this queue.")
@click.option(
    "-s",
    "--state",
    type=click.Choice([s.value for s in TaskState]),
    help="Only tasks in this state. Waiting tasks are scheduled (not due yet), pending or "
    "retrying.",
)
@click.option("-t", "--type", "type_", help="Only tasks of this type.")
@click.option("--since", help="Only tasks created since this: a duration (1h, 7d) or ISO 8601.")
@click.option("--until", help="Only tasks created before this: a duration ago or ISO 8601.")
@click.option(
    "-n",
    "--page-size",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Tasks per page (1 to 1,000).",
)
@click.option("--page-token", default="", help="Go on where a previous page ended.")
@click.option("--all", "every", is_flag=True, help="Every matching task, page after page.")
@target_option
@json_option
@reports_errors
def list_tasks(
    queue: str | None,
    state: str | None,
    type_: str | None,
    since: str | None,
    until: str | None,
    page_size: int,
    page_token: str,
    every: bool,
    target: str,
    as_json: bool,
) -> None:
    """List tasks, newest first, one page at a time.

    When more tasks match, the command for the next page is printed on
    stderr (or, with --json, `next_page_token` holds its token).
    """
    filters: dict[str, Any] = {
        "queue": queue,
        "state": state,
        "type": type_,
        "created_after": _instant(since, "--since"),
        "created_before": _instant(until, "--until"),
    }
    with connect(target) as client:
        tasks, token = client.list_page(page_size=page_size, page_token=page_token, **filters)
        while every and token:
            more, token = client.list_page(page_size=1000, page_token=token, **filters)
            tasks += more
        if as_json:
            rows = [task_dict(t) for t in tasks]
            click.echo(json.dumps({"tasks": rows, "next_page_token": token}, indent=2))
            return
        _table(tasks)
        if token:
            click.echo(f"more: {_next_page(filters, page_size, token)}", err=True)
        elif not tasks and state is not None:
            _elsewhere(client, TaskState(state), filters)


def _instant(value: str | None, option: str) -> datetime | None:
    """A duration ago (1h) or an ISO 8601 time."""
    if value is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?(ms|s|m|h|d)", value.strip()):
        return datetime.now(UTC) - timedelta(seconds=seconds(value, option) or 0.0)
    return parse_when(value, option)


def _table(tasks: list[Task]) -> None:
    click.echo(
        f"{'ID':<26}  {'STATE':<10} {'QUEUE':<12} {'TYPE':<20} {'PRI':>4} {'ATT':>3}  "
        f"{'CREATED':<19}  DUE"
    )
    for t in tasks:
        due = when(t.run_time) if t.state in (TaskState.SCHEDULED, TaskState.RETRYING) else ""
        click.echo(
            f"{t.id:<26}  {t.state.value:<10} {t.queue:<12.12} {t.type:<20.20} "
            f"{t.priority:>4} {t.attempt:>3}  {when(t.create_time):<19}  {due}".rstrip()
        )


def _next_page(filters: dict[str, Any], page_size: int, token: str) -> str:
    """The command for the next page: same filters, times made absolute."""
    argv = ["taskyard", "list"]
    for flag, key in (("-q", "queue"), ("-s", "state"), ("-t", "type")):
        if filters[key]:
            argv += [flag, str(filters[key])]
    for flag, key in (("--since", "created_after"), ("--until", "created_before")):
        if filters[key] is not None:
            argv += [flag, filters[key].isoformat()]
    if page_size != 20:
        argv += ["-n", str(page_size)]
    return shlex.join([*argv, "--page-token", token])


def _elsewhere(client: SyncClient, state: TaskState, filters: dict[str, Any]) -> None:
    """No task in the asked waiting state: say whether the others hold some."""
    if state not in WAITING:
        return
    others = []
    for other in sorted(WAITING - {state}):
        found, _ = client.list_page(page_size=1, **(filters | {"state": other}))
        if found:
            others.append(f"`taskyard list --state {other.value}`")
    if others:
        click.echo(
            f"no {state.value} tasks; waiting tasks are scheduled (not due yet), pending or "
            f"retrying — see {' and '.join(others)}",
            err=True,
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


@click.command(short_help="Follow a task until it finishes, then show its result.")
@click.argument("task_id")
@target_option
@json_option
@reports_errors
def watch(task_id: str, target: str, as_json: bool) -> None:
    """Follow a task's state and progress until it finishes, then show its result.

    On a terminal, progress is a bar; in a pipe, one line per update; with
    --json, one JSON object per update. Exits 0 if the task succeeded, 1 if
    it ended otherwise.
    """
    with connect(target) as client:
        note_if_idle(client, client.get(task_id, full=False))
        tty = sys.stdout.isatty()
        last = follow(client, task_id, as_json=as_json, tty=tty)
    if last is None or last.state is not TaskState.SUCCEEDED:
        sys.exit(1)
