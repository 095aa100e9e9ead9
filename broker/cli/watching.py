"""`taskyard watch`: a progress bar on a terminal, plain lines in a pipe, JSON lines with --json.

Every form ends with the task's outcome: the result of a succeeded task (the
broker's last WatchTask message carries it), or the error of a failed one.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import click

from broker.cli.views import jsonable, task_dict
from worker_sdk import SyncClient, Task, TaskState

PERMILLE = 1000  # bar resolution: tenths of a percent


class _Bar:
    """click's progress bar for one running stretch of a task (a new attempt starts anew)."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._bar: Any = self._stack.enter_context(
            click.progressbar(
                length=PERMILLE,
                label="running",
                show_eta=False,
                show_percent=True,
                item_show_func=lambda note: note,
                width=30,
            )
        )

    def show(self, task: Task) -> None:
        p = task.progress
        if p is None:
            return
        target = max(0, min(PERMILLE, round(p.percent * 10)))
        note = f"step {p.step}/{p.total_steps} {p.message}" if p.total_steps else p.message
        self._bar.update(target - self._bar.pos, note or None)

    def close(self) -> None:
        self._stack.close()


def line(task: Task) -> str:
    """One plain line per update: state, then progress or error."""
    text = task.state.value
    if task.progress and task.state is TaskState.RUNNING:
        p = task.progress
        text += f" {p.percent:.0f}%"
        if p.total_steps:
            text += f" step {p.step}/{p.total_steps}"
        if p.message:
            text += f" {p.message}"
    if task.error and task.done:
        text += f" ({task.error.type}: {task.error.message})"
    return text


def outcome(task: Task) -> str | None:
    """The closing line: a succeeded task's result."""
    if task.state is TaskState.SUCCEEDED:
        return "result: " + json.dumps(jsonable(task.result))
    return None


def follow(client: SyncClient, task_id: str, *, as_json: bool, tty: bool) -> Task | None:
    """Show every update of the task until it finishes; returns the last one."""
    last: Task | None = None
    bar: _Bar | None = None
    try:
        for task in client.watch(task_id):
            if as_json:
                click.echo(json.dumps(task_dict(task)))
            elif tty and task.state is TaskState.RUNNING and task.progress is not None:
                bar = bar or _Bar()
                bar.show(task)
            else:
                if bar is not None:
                    bar.close()
                    bar = None
                if not tty or last is None or _differs(last, task):
                    click.echo(line(task))
            last = task
    finally:
        if bar is not None:
            bar.close()
    if last is not None and not as_json and (closing := outcome(last)) is not None:
        click.echo(closing)
    return last


def _differs(old: Task, new: Task) -> bool:
    """On a terminal a line is printed only when something other than progress changed."""
    return (old.state, old.attempt, old.cancel_requested) != (
        new.state,
        new.attempt,
        new.cancel_requested,
    )
