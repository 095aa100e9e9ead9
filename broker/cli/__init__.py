"""The `taskyard` command: run a broker or a worker, and drive tasks from a shell.

Every client command takes --target (or TASKYARD_TARGET) and, where it prints
data, --json. Errors are one line on stderr (broker/cli/errors.py).
"""

from __future__ import annotations

import click

from broker.cli import errors
from broker.cli.admin import queue_group, workers_group
from broker.cli.events import events
from broker.cli.extra import broker_installed, missing
from broker.cli.helpgroup import HelpGroup
from broker.cli.logs import logs
from broker.cli.operations import attempts, purge, retry, whoami
from broker.cli.schedules import schedule_group
from broker.cli.stats import stats
from broker.cli.tasks import cancel, get, list_tasks, submit, watch
from broker.cli.token import token_group
from broker.cli.worker import worker_command

broker_side: list[click.Command]
if broker_installed():
    from broker.cli.dev import dev_command
    from broker.cli.serve import broker_command, db_group

    broker_side = [dev_command, broker_command, db_group]
else:  # `pip install taskyard` without [broker]: the client side only
    broker_side = [
        missing("dev", "Start a broker and a worker (needs taskyard[broker])."),
        missing("broker", "Run the broker (needs taskyard[broker])."),
        missing("db", "Database migrations (needs taskyard[broker])."),
    ]

EPILOG = (
    "Client commands read the broker's address from --target or TASKYARD_TARGET "
    "(default 127.0.0.1:50051) and print JSON with --json. Shell completion: "
    'eval "$(_TASKYARD_COMPLETE=bash_source taskyard)" (zsh_source, fish_source for '
    "other shells)."
)


@click.group(
    cls=HelpGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.version_option(package_name="taskyard")
def cli() -> None:
    """Taskyard: a gRPC task broker with language-neutral workers."""


for command in (
    *broker_side,
    worker_command,
    submit,
    get,
    list_tasks,
    watch,
    events,
    logs,
    cancel,
    retry,
    attempts,
    purge,
    queue_group,
    workers_group,
    stats,
    schedule_group,
    token_group,
    whoami,
):
    cli.add_command(command)


def main() -> None:
    errors.run(cli)
