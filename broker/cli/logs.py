"""`taskyard logs ID [--follow]`: what a task's handlers wrote with ctx.log."""

from __future__ import annotations

import json

import click

from broker.cli.common import json_option, reports_errors, target_option
from broker.cli.credentials import connect
from worker_sdk import LogRecord


def _line(record: LogRecord) -> str:
    stamp = record.time.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if record.time else ""
    return f"{stamp}  {record.level:<8} #{record.attempt}  {record.message}"


def _json(record: LogRecord) -> str:
    return json.dumps(
        {
            "time": record.time.isoformat() if record.time else None,
            "level": record.level,
            "attempt": record.attempt,
            "message": record.message,
        }
    )


@click.command(short_help="Show the log records a task's handlers wrote (ctx.log).")
@click.argument("task_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until it ends.")
@click.option("--attempt", type=click.IntRange(1), help="Only this attempt's records.")
@target_option
@json_option
@reports_errors
def logs(task_id: str, follow: bool, attempt: int | None, target: str, as_json: bool) -> None:
    """Print the log records of task TASK_ID, oldest first: time, level, attempt, message.

    Records travel with the worker's heartbeats, so a running task's last second or so
    may not be there yet; --follow waits for them and returns once the task has ended.
    With --json, one JSON object per line.
    """
    with connect(target) as client:
        for record in client.logs(task_id, follow=follow, attempt=attempt):
            click.echo(_json(record) if as_json else _line(record))
