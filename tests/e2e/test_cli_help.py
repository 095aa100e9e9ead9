"""Help and scripting: documented options, whole descriptions, --json, completion.

The walks go over the command tree in process; the rest runs the real command.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from broker.cli import cli
from broker.cli.errors import COMMANDS, for_people
from taskyard.v1 import (
    queue_service_pb2,
    schedule_service_pb2,
    stats_service_pb2,
    task_service_pb2,
    worker_service_pb2,
)
from tests.cli import taskyard
from tests.helpers import ROOT

# Commands that run something rather than print data: no --json.
RUNNERS = {"taskyard broker", "taskyard dev", "taskyard worker"}


def commands(
    command: click.Command = cli, path: str = "taskyard"
) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, f"{path} {name}")


def test_every_option_has_a_description() -> None:
    missing = [
        f"{path} {option.opts[0]}"
        for path, command in commands()
        for option in command.params
        if isinstance(option, click.Option) and not option.hidden and not option.help
        and option.name != "help"
    ]  # fmt: skip
    assert missing == []


def test_every_command_that_prints_data_takes_json() -> None:
    missing = [
        path
        for path, command in commands()
        if not isinstance(command, click.Group) or command.invoke_without_command
        if path not in RUNNERS and "as_json" not in {p.name for p in command.params}
    ]
    assert missing == []


@pytest.mark.parametrize("group", ["", "queue", "schedule", "token", "workers", "db"])
async def test_group_help_never_cuts_a_description(group: str) -> None:
    run = await taskyard(*group.split(), "--help", env={"COLUMNS": "80"})
    assert run.code == 0
    listing = run.out.split("Commands:")[1]
    assert "..." not in listing, listing


async def test_target_help_names_the_environment_variable() -> None:
    run = await taskyard("list", "--help", env={"COLUMNS": "100"})
    target = run.out[run.out.index("--target") : run.out.index("--token")]
    assert "TASKYARD_TARGET" in target


async def test_shell_completion_works_and_is_documented() -> None:
    run = await taskyard(env={"_TASKYARD_COMPLETE": "bash_source"})
    assert run.code == 0 and "_TASKYARD_COMPLETE=bash_complete" in run.out
    run = await taskyard(
        env={"_TASKYARD_COMPLETE": "bash_complete", "COMP_WORDS": "taskyard sub", "COMP_CWORD": "1"}
    )
    assert "plain,submit" in run.out.splitlines()
    run = await taskyard(
        env={
            "_TASKYARD_COMPLETE": "bash_complete",
            "COMP_WORDS": "taskyard list --state sch",
            "COMP_CWORD": "3",
        }
    )
    assert "plain,scheduled" in run.out.splitlines()
    assert "_TASKYARD_COMPLETE=bash_source taskyard" in (ROOT / "README.md").read_text()


def test_every_rpc_named_in_messages_maps_to_a_command_that_exists() -> None:
    rpcs = {
        method.name
        for module in (
            task_service_pb2, queue_service_pb2, stats_service_pb2, schedule_service_pb2,
            worker_service_pb2,
        )
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    } - {"Lease"}  # fmt: skip
    assert set(COMMANDS) == rpcs
    paths = {path for path, _ in commands()}
    for command in COMMANDS.values():
        assert command.split(" --")[0] in paths, command  # a flag after the command is fine
    assert for_people("change it with UpdateQueue") == "change it with `taskyard queue update`"
    assert for_people("see `ListSchedules`") == "see `taskyard schedule list`"
    assert for_people("UpdateQueues stays") == "UpdateQueues stays"
