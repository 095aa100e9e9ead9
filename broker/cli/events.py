"""`taskyard events`: follow the broker's global event stream (docs/events.md)."""

from __future__ import annotations

import json

import click

from broker.cli.common import json_option, reports_errors, target_option
from broker.cli.credentials import connect
from worker_sdk import Event

KINDS = ("task_state", "task_progress", "schedule_fire", "worker")


def line(event: Event) -> str:
    """One line per event: time, kind, then what matters for that kind."""
    stamp = event.time.strftime("%H:%M:%S.%f")[:-3] if event.time else "--:--:--"
    if event.kind == "task_state":
        before = event.previous_state.value if event.previous_state else "new"
        after = event.state.value if event.state else "?"
        what = f"{event.task_id} {event.queue}/{event.type} {before} -> {after}"
    elif event.kind == "task_progress" and event.progress is not None:
        p = event.progress
        what = f"{event.task_id} {event.queue}/{event.type} {p.percent:.0f}% {p.message}".rstrip()
    elif event.kind == "schedule_fire":
        what = f"{event.schedule} -> {event.task_id or 'no task'} ({event.queue}/{event.type})"
    elif event.kind == "worker":
        what = f"{event.worker_id} {event.change}"
    else:
        what = f"events lost ({event.change}): refetch what you show"
    return f"{stamp} #{event.sequence} {event.kind} {what}"


def as_dict(event: Event) -> dict[str, object]:
    from google.protobuf import json_format

    return json_format.MessageToDict(event.raw)


@click.command(short_help="Follow what happens in the broker: tasks, schedules, workers.")
@click.option(
    "-k",
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only these kinds; repeatable.",
)
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues; repeatable.")
@click.option("--type", "types", multiple=True, help="Only these task types; repeatable.")
@click.option(
    "--state", "states", multiple=True, help="Only task events into these states; repeatable."
)
@click.option(
    "--label", "labels", multiple=True, help="key=value: only tasks with this label; repeatable."
)
@target_option
@json_option
@reports_errors
def events(
    kinds: tuple[str, ...],
    queues: tuple[str, ...],
    types: tuple[str, ...],
    states: tuple[str, ...],
    labels: tuple[str, ...],
    target: str,
    as_json: bool,
) -> None:
    """Print every event as it happens until Ctrl-C: one line each, or JSON with --json.

    Reconnects and resumes by itself when the broker restarts; a "gap" line
    says events were lost meanwhile.
    """
    wanted = {}
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep:
            raise click.BadParameter(f"{label!r} is not key=value", param_hint="--label")
        wanted[key] = value
    with connect(target) as client:
        stream = client.events(
            kinds=kinds, queues=queues, types=types, states=states, labels=wanted or None
        )
        for event in stream:
            click.echo(json.dumps(as_dict(event)) if as_json else line(event))
