"""The `taskyard` command: run a broker or a worker, and drive tasks from a shell."""

from __future__ import annotations

import click

from broker.cli.admin import queue_group, stats, workers_group
from broker.cli.operations import attempts, purge, retry
from broker.cli.schedules import schedule_group
from broker.cli.serve import broker_command, db_group
from broker.cli.tasks import cancel, get, list_tasks, submit, watch
from broker.cli.token import token_group
from broker.cli.worker import worker_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="taskyard")
def cli() -> None:
    """Taskyard: a gRPC task broker with language-neutral workers."""


cli.add_command(broker_command)
cli.add_command(db_group)
cli.add_command(worker_command)
cli.add_command(schedule_group)
cli.add_command(token_group)
cli.add_command(queue_group)
cli.add_command(workers_group)
for command in (submit, get, list_tasks, cancel, watch, retry, attempts, purge, stats):
    cli.add_command(command)


def main() -> None:
    cli(auto_envvar_prefix="TASKYARD")
