"""How the `taskyard` command fails: one line on stderr, a non-zero status, no traceback.

Usage mistakes exit 2 and name the command's --help; refusals by the broker
and unusable input exit 1. The broker's messages are written for every client
and may name RPCs ("change it with UpdateQueue"); printed by the CLI, those
names become the commands that do the same thing.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

import click

# RPC → the command a CLI user types for it (tests/e2e/test_cli_help.py checks both sides).
COMMANDS = {
    "CreateTask": "taskyard submit",
    "BatchCreateTasks": "taskyard submit",
    "GetTask": "taskyard get",
    "ListTasks": "taskyard list",
    "CancelTask": "taskyard cancel",
    "WatchTask": "taskyard watch",
    "RetryTask": "taskyard retry",
    "RetryTasks": "taskyard retry --queue",
    "ListTaskAttempts": "taskyard attempts",
    "ListTaskLogs": "taskyard logs",
    "FollowTaskLogs": "taskyard logs --follow",
    "PurgeTasks": "taskyard purge",
    "CreateQueue": "taskyard queue create",
    "GetQueue": "taskyard queue get",
    "ListQueues": "taskyard queue list",
    "UpdateQueue": "taskyard queue update",
    "DeleteQueue": "taskyard queue delete",
    "PauseQueue": "taskyard queue pause",
    "ResumeQueue": "taskyard queue resume",
    "GetQueueStats": "taskyard stats",
    "GetTaskStats": "taskyard stats",
    "CreateSchedule": "taskyard schedule create",
    "GetSchedule": "taskyard schedule get",
    "ListSchedules": "taskyard schedule list",
    "UpdateSchedule": "taskyard schedule update",
    "DeleteSchedule": "taskyard schedule delete",
    "PauseSchedule": "taskyard schedule pause",
    "ResumeSchedule": "taskyard schedule resume",
    "RunSchedule": "taskyard schedule run",
    "PreviewSchedule": "taskyard schedule preview",
    "ListScheduleFires": "taskyard schedule get",
    "ListWorkers": "taskyard workers",
    "GetWorker": "taskyard workers",
    "DrainWorker": "taskyard workers drain",
}
_RPC = re.compile(r"`?\b(" + "|".join(sorted(COMMANDS, key=len, reverse=True)) + r")\b`?")


def for_people(message: str) -> str:
    """`message` with RPC names replaced by the matching `taskyard` commands."""
    return _RPC.sub(lambda m: f"`{COMMANDS[m.group(1)]}`", message)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run(command: click.Command) -> NoReturn:
    """Run the command line; errors become one line each."""
    try:
        code = command.main(
            prog_name="taskyard", auto_envvar_prefix="TASKYARD", standalone_mode=False
        )
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "taskyard"
        fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(130)  # Ctrl-C while waiting or watching: the person asked to stop
        fail("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)
