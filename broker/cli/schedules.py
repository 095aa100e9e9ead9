"""`taskyard schedule …`: create, list, get, update, pause, resume, run, delete and preview."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from broker.cli.common import (
    json_option,
    max_attempts_option,
    parse_payload,
    parse_when,
    reports_errors,
    seconds,
    target_option,
)
from broker.cli.credentials import connect
from broker.cli.helpgroup import HelpGroup
from broker.cli.views import jsonable, print_task, retry_text, timeouts_text
from worker_sdk import RetryPolicy, Schedule, ScheduleFire, TaskSpec, Timeouts

F = TypeVar("F", bound=Callable[..., Any])


@click.group(
    "schedule",
    cls=HelpGroup,
    short_help="Cron, recurrence-rule, interval and one-shot schedules of tasks.",
)
def schedule_group() -> None:
    """Schedules: tasks the broker submits on cron, RRULE, interval and one-shot triggers."""


def _spec_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--cron", help="Cron expression, e.g. '30 2 * * *' or '@hourly'."),
            click.option(
                "--rrule", help="RFC 5545 rule, e.g. 'FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17'."
            ),
            click.option("--every", help="Fixed interval, e.g. 30s, 15m, 1d."),
            click.option("--at", "at", help="One-shot: ISO 8601 time or a delay such as +10m."),
            click.option(
                "--tz", "time_zone", help="IANA time zone of --cron, --rrule, --exclude (UTC)."
            ),
            click.option(
                "--start", help="No fire before this (ISO 8601); anchors --every and --rrule."
            ),
            click.option("--end", help="No fire after this (ISO 8601)."),
            click.option(
                "--exclude",
                "exclude",
                multiple=True,
                help="A date or FIRST..LAST range not to fire on, e.g. 2026-12-24..2026-12-26; "
                "repeatable ('none' clears them).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _settings_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--jitter", help="Delay each task by up to this, e.g. 30s."),
            click.option("--misfire-grace", help="How late a fire may still run, e.g. 5m."),
            click.option(
                "--catchup",
                type=click.Choice(["skip", "one", "all"]),
                help="Missed fire times: run none, one, or each (up to --catchup-limit).",
            ),
            click.option("--catchup-limit", type=int, help="With --catchup all: at most this."),
            click.option(
                "--overlap",
                type=click.Choice(["skip", "buffer_one", "allow_all"]),
                help="While the previous run (or --max-instances runs) is unfinished.",
            ),
            click.option(
                "--max-instances",
                type=click.IntRange(1, 1000),
                help="Runs that may be unfinished at once (default 1).",
            ),
            click.option("--description", help="Free text."),
            click.option("--payload", help="JSON payload of the task, or @file.json."),
            click.option("-q", "--queue", help="The task's queue."),
            click.option("-p", "--priority", type=int, help="The task's priority."),
            click.option("-l", "--label", "labels", multiple=True, help="key=value, repeatable."),
            max_attempts_option("Attempts in all of each fired task (1: never retry)."),
            click.option(
                "--retry-on",
                multiple=True,
                help="Retry only this error type (others fail at once); repeatable.",
            ),
            click.option("--execution-timeout", help="Limit of one attempt, e.g. 5m."),
        ]
    ):
        fn = option(fn)
    return fn


def _spec(
    cron: str | None,
    rrule: str | None,
    every: str | None,
    at: str | None,
    time_zone: str | None,
    start: str | None,
    end: str | None,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cron is not None:
        out["cron"] = cron
    if rrule is not None:
        out["rrule"] = rrule
    if exclude:
        out["exclusions"] = _exclusions(exclude)
    if every is not None:
        out["every"] = seconds(every, "--every")
    if at is not None:
        out["at"] = parse_when(at, "--at")
    if time_zone is not None:
        out["time_zone"] = time_zone
    if start is not None:
        out["start_time"] = parse_when(start, "--start")
    if end is not None:
        out["end_time"] = parse_when(end, "--end")
    return out


def _exclusions(items: tuple[str, ...]) -> list[tuple[str, str]]:
    if [i.lower() for i in items] == ["none"]:
        return []
    out = []
    for item in items:
        first, _, last = item.partition("..")
        out.append((first.strip(), (last or first).strip()))
    return out


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("jitter", "misfire_grace"):
        if options.get(key) is not None:
            out[key] = seconds(options[key], f"--{key.replace('_', '-')}")
    for key in ("catchup", "catchup_limit", "overlap", "max_instances", "description"):
        if options.get(key) is not None:
            out[key] = options[key]
    return out


def _task_changes(options: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if options.get("payload") is not None:
        changes["payload"] = parse_payload(options["payload"])
    for key in ("queue", "priority", "max_attempts"):
        if options.get(key) is not None:
            changes[key] = options[key]
    if options.get("labels"):
        changes["labels"] = dict(_label(item) for item in options["labels"])
    if options.get("execution_timeout") is not None:
        execution = seconds(options["execution_timeout"], "--execution-timeout")
        changes["timeouts"] = Timeouts(execution=execution)
    if options.get("retry_on"):
        changes["retry_policy"] = RetryPolicy(retryable_error_types=tuple(options["retry_on"]))
    return changes


def _label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise click.BadParameter(f"{item!r} is not key=value", param_hint="--label")
    return key, value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _trigger(s: Schedule) -> str:
    if s.cron is not None:
        return f"cron {s.cron!r} ({s.time_zone})"
    if s.rrule is not None:
        return f"rrule {s.rrule!r} ({s.time_zone})"
    if s.every is not None:
        return f"every {s.every:g}s"
    return f"once at {local(s.at, s.time_zone) if s.at else '-'}"


def _fire_dict(f: ScheduleFire) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fire_time": _iso(f.fire_time),
        "result": f.result,
        "task_id": f.task_id or None,
        "task_state": f.task_state.value if f.task_state else None,
        "manual": f.manual,
    }
    if f.run_time is not None and f.run_time != f.fire_time:
        out["run_time"] = _iso(f.run_time)  # later than fire_time: jitter, or a late fire
    if f.result == "missed":
        out["missed_count"] = f.missed_count
        out["last_missed_time"] = _iso(f.last_missed_time)
    if f.message:
        out["message"] = f.message
    return out


def _task_dict(t: TaskSpec) -> dict[str, Any]:
    """The task a schedule submits, payload included."""
    out: dict[str, Any] = {"type": t.type, "queue": t.queue or "default", "priority": t.priority}
    if t.payload is not None:
        out["payload"] = jsonable(t.payload)
    if t.labels:
        out["labels"] = t.labels
    if t.max_attempts:
        out["max_attempts"] = t.max_attempts
    if (retry := retry_text(t.retry_policy)) is not None:
        out["retry_policy"] = retry
    if (limits := timeouts_text(t.timeouts)) is not None:
        out["timeouts"] = limits
    return out


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local(t: datetime, zone_name: str) -> str:
    """A fire time as read in the schedule's zone: `2026-12-06 09:00:00 CST`."""
    zone = _zone(zone_name) or UTC
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def schedule_dict(s: Schedule) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": s.state,
        "trigger": _trigger(s),
        "description": s.description,
        "next_fire_times": [t.isoformat() for t in s.next_fire_times],
        "last_fire": _fire_dict(s.last_fire) if s.last_fire else None,
        "task": _task_dict(s.task),
        "policies": {
            "misfire_grace_s": s.misfire_grace,
            "catchup": s.catchup,
            "catchup_limit": s.catchup_limit,
            "overlap": s.overlap,
            "max_instances": s.max_instances,
            "jitter_s": s.jitter,
        },
        "exclusions": [
            first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
            for first, last in s.exclusions
        ],
        "counts": {
            "started": s.started_count,
            "skipped": s.skipped_count,
            "missed": s.missed_count,
            "failed": s.failed_count,
            "running": s.running_count,
        },
        "pause_note": s.pause_note or None,
    }


def _print_schedule(s: Schedule, as_json: bool) -> None:
    data = schedule_dict(s)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    data["next_fire_times"] = [local(t, s.time_zone) for t in s.next_fire_times]
    for key, value in data.items():
        if value not in (None, "", [], {}):
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            click.echo(f"{key:>15}: {shown}")


@schedule_group.command(
    "create", short_help="Create a schedule (--cron, --rrule, --every or --at)."
)
@click.argument("name")
@click.argument("type")
@_spec_options
@_settings_options
@target_option
@json_option
@reports_errors
def create(
    name: str,
    type: str,
    cron: str | None,
    rrule: str | None,
    every: str | None,
    at: str | None,
    time_zone: str | None,
    start: str | None,
    end: str | None,
    exclude: tuple[str, ...],
    target: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Create schedule NAME submitting tasks of TYPE (give --cron, --rrule, --every or --at)."""
    spec = _spec(cron, rrule, every, at, time_zone, start, end, exclude)
    if sum(k in spec for k in ("cron", "rrule", "every", "at")) != 1:
        raise click.UsageError("give exactly one of --cron, --rrule, --every and --at")
    task = TaskSpec(type=type, **_task_changes(options))
    with connect(target) as client:
        schedule = client.create_schedule(name, task, **spec, **_settings(options))
    _print_schedule(schedule, as_json)


@schedule_group.command("update")
@click.argument("name")
@click.option("--type", "task_type", help="The task type.")
@_spec_options
@_settings_options
@target_option
@json_option
@reports_errors
def update(
    name: str,
    task_type: str | None,
    cron: str | None,
    rrule: str | None,
    every: str | None,
    at: str | None,
    time_zone: str | None,
    start: str | None,
    end: str | None,
    exclude: tuple[str, ...],
    target: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Change only the given settings of schedule NAME."""
    changes = {
        **_spec(cron, rrule, every, at, time_zone, start, end, exclude),
        **_settings(options),
    }
    task_changes = _task_changes(options)
    if task_type is not None:
        task_changes["type"] = task_type
    with connect(target) as client:
        if task_changes:
            current = client.get_schedule(name).task
            if "retry_policy" in task_changes:  # --retry-on changes only the allowlist
                allow = task_changes["retry_policy"].retryable_error_types
                task_changes["retry_policy"] = dataclasses.replace(
                    current.retry_policy or RetryPolicy(), retryable_error_types=allow
                )
            changes["task"] = dataclasses.replace(current, **task_changes)
        if not changes:
            raise click.UsageError("nothing to change: give at least one option")
        schedule = client.update_schedule(name, **changes)
    _print_schedule(schedule, as_json)


@schedule_group.command("list")
@target_option
@json_option
@reports_errors
def list_schedules(target: str, as_json: bool) -> None:
    """List schedules with their state and next run."""
    with connect(target) as client:
        schedules = list(client.list_schedules())
    if as_json:
        click.echo(json.dumps([schedule_dict(s) for s in schedules], indent=2))
        return
    rows = [("NAME", "STATE", "NEXT RUN", "LAST", "TRIGGER")]
    for s in schedules:
        next_run = local(s.next_fire_times[0], s.time_zone) if s.next_fire_times else "-"
        last = "-"
        if s.last_fire is not None:
            state = s.last_fire.task_state.value if s.last_fire.task_state else ""
            last = f"{s.last_fire.result} {state}".strip()
        rows.append((s.name, s.state, next_run, last, _trigger(s)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[4]]))


@schedule_group.command("get")
@click.argument("name")
@click.option("--history", type=int, default=10, show_default=True, help="Fire records shown.")
@target_option
@json_option
@reports_errors
def get(name: str, history: int, target: str, as_json: bool) -> None:
    """Show schedule NAME and its latest fire records."""
    with connect(target) as client:
        schedule = client.get_schedule(name)
        fires: list[ScheduleFire] = []
        for fire in client.schedule_fires(name, page_size=max(history, 1)):
            if len(fires) >= history:
                break
            fires.append(fire)
    if as_json:
        data = schedule_dict(schedule) | {"history": [_fire_dict(f) for f in fires]}
        click.echo(json.dumps(data, indent=2))
        return
    _print_schedule(schedule, False)
    if fires:
        click.echo("        history:")
        for f in fires:
            click.echo("          " + json.dumps(_fire_dict(f)))


@schedule_group.command("pause")
@click.argument("name")
@click.option("--note", default="", help="Why, for whoever finds it paused.")
@target_option
@json_option
@reports_errors
def pause(name: str, note: str, target: str, as_json: bool) -> None:
    """Stop firing schedule NAME until it is resumed."""
    with connect(target) as client:
        _print_schedule(client.pause_schedule(name, note), as_json)


@schedule_group.command("resume")
@click.argument("name")
@target_option
@json_option
@reports_errors
def resume(name: str, target: str, as_json: bool) -> None:
    """Fire schedule NAME again, from its next fire time after now."""
    with connect(target) as client:
        _print_schedule(client.resume_schedule(name), as_json)


@schedule_group.command("run", short_help="Submit a schedule's task once, now.")
@click.argument("name")
@target_option
@json_option
@reports_errors
def run(name: str, target: str, as_json: bool) -> None:
    """Submit schedule NAME's task once, now; the timetable is unchanged."""
    with connect(target) as client:
        print_task(client.run_schedule(name), as_json)


@schedule_group.command("delete")
@click.argument("name")
@target_option
@json_option
@reports_errors
def delete(name: str, target: str, as_json: bool) -> None:
    """Delete schedule NAME and its history (tasks it submitted stay)."""
    with connect(target) as client:
        client.delete_schedule(name)
    click.echo(json.dumps({"deleted": name}) if as_json else f"deleted schedule {name}")


@schedule_group.command("preview", short_help="The next fire times of a schedule or a spec.")
@click.argument("name", required=False)
@_spec_options
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="How many fire times to list.",
)
@click.option("--after", help="List fire times after this (ISO 8601); default now.")
@target_option
@json_option
@reports_errors
def preview(
    name: str | None,
    cron: str | None,
    rrule: str | None,
    every: str | None,
    at: str | None,
    time_zone: str | None,
    start: str | None,
    end: str | None,
    exclude: tuple[str, ...],
    count: int,
    after: str | None,
    target: str,
    as_json: bool,
) -> None:
    """The next fire times of schedule NAME, or of a spec (--cron, --rrule, …) before saving it.

    --exclude applies to a spec too, so the preview shows which dates it skips.
    """
    spec = _spec(cron, rrule, every, at, time_zone, start, end, exclude)
    if (name is None) == (not spec):
        raise click.UsageError("give a schedule NAME or a spec (--cron, --rrule, --every or --at)")
    with connect(target) as client:
        since = parse_when(after, "--after") if after else None
        times = client.preview_schedule(name, count=count, after=since, **spec)
        zone = time_zone or (client.get_schedule(name).time_zone if name else "UTC")
    if as_json:
        click.echo(json.dumps([t.isoformat() for t in times]))
        return
    for t in times:
        # The zone's wall-clock time first: that is what a cron line in it means.
        utc = t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        shown = local(t, zone)
        click.echo(shown if shown == utc else f"{shown}  ({utc})")
