"""Operator commands: retry, attempts, purge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from broker.cli.common import json_option, reports_errors, seconds, target_option
from broker.cli.credentials import connect
from broker.cli.views import print_task
from worker_sdk import TaskState

FINISHED = [s.value for s in TaskState if s.is_terminal]


@click.command(short_help="Run a finished task again, or all of a queue's dead ones.")
@click.argument("task_id", required=False)
@click.option("-q", "--queue", help="Re-queue every matching task of this queue instead.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(FINISHED),
    help="With --queue: which finished states (default: dead); repeatable.",
)
@target_option
@json_option
@reports_errors
def retry(
    task_id: str | None, queue: str | None, states: tuple[str, ...], target: str, as_json: bool
) -> None:
    """Run a failed, dead, cancelled or expired task again (or all of a queue's)."""
    if (task_id is None) == (queue is None):
        raise click.UsageError("give either a TASK_ID or --queue (one of the two)")
    with connect(target) as client:
        if task_id is not None:
            print_task(client.retry(task_id), as_json)
            return
        assert queue is not None
        count = client.retry_all(queue, states or ("dead",))
    click.echo(json.dumps({"retried": count}) if as_json else f"re-queued {count} tasks")


@click.command()
@click.argument("task_id")
@target_option
@json_option
@reports_errors
def attempts(task_id: str, target: str, as_json: bool) -> None:
    """List every attempt of a task."""
    with connect(target) as client:
        history = client.attempts(task_id)
    if as_json:
        rows = [
            {
                "attempt": a.attempt,
                "worker_id": a.worker_id,
                "start_time": a.start_time.isoformat() if a.start_time else None,
                "end_time": a.end_time.isoformat() if a.end_time else None,
                "outcome": a.outcome,
                "error": {"type": a.error.type, "message": a.error.message} if a.error else None,
            }
            for a in history
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'#':>3}  {'OUTCOME':<11} {'WORKER':<20} {'STARTED':<19}  ERROR")
    for a in history:
        started = a.start_time.strftime("%Y-%m-%d %H:%M:%S") if a.start_time else ""
        error = f"{a.error.type}: {a.error.message}" if a.error else ""
        click.echo(f"{a.attempt:>3}  {a.outcome:<11} {a.worker_id:<20.20} {started:<19}  {error}")


@click.command(short_help="Delete finished tasks now.")
@click.option("-q", "--queue", help="Only this queue.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(FINISHED),
    help="Only these finished states (default: all); repeatable.",
)
@click.option("--older-than", help="Only tasks finished longer ago than this, e.g. 7d.")
@target_option
@json_option
@reports_errors
def purge(
    queue: str | None, states: tuple[str, ...], older_than: str | None, target: str, as_json: bool
) -> None:
    """Delete finished tasks now (retention does this in the background)."""
    before = None
    if older_than is not None:
        age = seconds(older_than, "--older-than") or 0.0
        before = datetime.now(UTC) - timedelta(seconds=age)
    with connect(target) as client:
        count = client.purge(queue=queue, states=states, finished_before=before)
    click.echo(json.dumps({"purged": count}) if as_json else f"purged {count} tasks")


@click.command(short_help="Who the broker takes you to be, and what your roles allow.")
@target_option
@json_option
@reports_errors
def whoami(target: str, as_json: bool) -> None:
    """Show the identity your token (TASKYARD_TOKEN) names: roles, queues, allowed methods."""
    with connect(target) as client:
        me = client.caller()
    if as_json:
        fields = ("name", "authenticated", "roles", "queue_limited", "queues", "methods")
        click.echo(json.dumps({f: getattr(me, f) for f in fields}, indent=2))
        return
    scope = f"; queues {', '.join(me.queues)}" if me.queue_limited else ""
    auth = "" if me.authenticated else " (the broker has no authentication)"
    click.echo(f"{me.name}: {', '.join(me.roles)}{scope}{auth}")
    own = set(me.own_task_methods)
    for method in me.methods:
        click.echo(f"  {method}{'  (own tasks only)' if method in own else ''}")
