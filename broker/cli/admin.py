"""Operator commands: `taskyard queue …` and `taskyard workers`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from broker.cli.common import json_option, reports_errors, retry_policy, seconds, target_option
from broker.cli.credentials import connect
from broker.cli.helpgroup import HelpGroup
from broker.cli.views import print_queue, queue_dict, span
from worker_sdk import Queue, Timeouts


def _queue_settings(
    max_concurrency: int | None,
    rate: str | None,
    key_limit: int | None,
    max_depth: int | None,
    backoff: str | None,
    execution_timeout: str | None,
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if max_concurrency is not None:
        settings["max_concurrency"] = max_concurrency or None
    if rate is not None:
        settings["rate_limit"] = _rate(rate)
    if key_limit is not None:
        settings["concurrency_key_limit"] = key_limit or None
    if max_depth is not None:
        settings["max_depth"] = max_depth or None
    if backoff is not None:
        settings["retry_policy"] = retry_policy(backoff, ())
    if execution_timeout is not None:
        settings["timeouts"] = Timeouts(execution=seconds(execution_timeout, "--execution-timeout"))
    return settings


def _rate(text: str) -> tuple[int, float] | None:
    """'100/1s' → (100, 1.0); 'none' clears the limit."""
    if text.lower() == "none":
        return None
    count, sep, per = text.partition("/")
    if not sep or not count.isdigit():
        raise click.BadParameter(f"{text!r} is not N/DURATION, e.g. 100/1s", param_hint="--rate")
    return int(count), seconds(per, "--rate") or 0.0


def queue_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--max-concurrency", type=int, help="Running at once, all workers (0: none)."
            ),
            click.option("--rate", help="Starts per interval, e.g. 100/1s (none: no limit)."),
            click.option(
                "--key-limit", type=int, help="Running at once per concurrency key (0: none)."
            ),
            click.option(
                "--max-depth", type=int, help="Waiting tasks before submits are refused (0: none)."
            ),
            click.option("--backoff", help="Default backoff, e.g. exponential:1s:2:5m."),
            click.option("--execution-timeout", help="Default execution timeout, e.g. 5m."),
        ]
    ):
        fn = option(fn)
    return fn


def _show(queue: Queue, as_json: bool) -> None:
    print_queue(queue, as_json)


@click.group("queue", cls=HelpGroup)
def queue_group() -> None:
    """Manage queues: limits, defaults, pause and resume."""


@queue_group.command("create")
@click.argument("name")
@queue_options
@target_option
@json_option
@reports_errors
def queue_create(name: str, target: str, as_json: bool, **options: Any) -> None:
    """Create queue NAME with the given limits."""
    with connect(target) as client:
        _show(client.create_queue(name, **_settings(options)), as_json)


@queue_group.command("update")
@click.argument("name")
@queue_options
@target_option
@json_option
@reports_errors
def queue_update(name: str, target: str, as_json: bool, **options: Any) -> None:
    """Change only the given settings of queue NAME."""
    settings = _settings(options)
    if not settings:
        raise click.UsageError("give at least one setting to change")
    with connect(target) as client:
        _show(client.update_queue(name, **settings), as_json)


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    return _queue_settings(
        options["max_concurrency"],
        options["rate"],
        options["key_limit"],
        options["max_depth"],
        options["backoff"],
        options["execution_timeout"],
    )


@queue_group.command("get")
@click.argument("name")
@target_option
@json_option
@reports_errors
def queue_get(name: str, target: str, as_json: bool) -> None:
    """Show queue NAME."""
    with connect(target) as client:
        _show(client.get_queue(name), as_json)


@queue_group.command("list")
@target_option
@json_option
@reports_errors
def queue_list(target: str, as_json: bool) -> None:
    """List queues."""
    with connect(target) as client:
        queues = client.list_queues()
    if as_json:
        click.echo(json.dumps([queue_dict(q) for q in queues], indent=2))
        return
    click.echo(f"{'QUEUE':<24} {'STATE':<7} {'CONCURRENCY':>11} {'RATE':>12} {'DEPTH':>8}")
    for q in queues:
        rate = f"{q.rate_limit[0]}/{span(q.rate_limit[1])}" if q.rate_limit else "-"
        click.echo(
            f"{q.name:<24.24} {'paused' if q.paused else 'active':<7} "
            f"{q.max_concurrency or '-':>11} {rate:>12} {q.max_depth or '-':>8}"
        )


@queue_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Even while tasks wait or run in it.")
@target_option
@json_option
@reports_errors
def queue_delete(name: str, force: bool, target: str, as_json: bool) -> None:
    """Delete queue NAME's settings (its tasks are untouched)."""
    with connect(target) as client:
        client.delete_queue(name, force=force)
    click.echo(json.dumps({"deleted": name}) if as_json else f"deleted queue {name}")


@queue_group.command("pause")
@click.argument("name")
@click.option("--note", default="", help="Why, and until when.")
@target_option
@json_option
@reports_errors
def queue_pause(name: str, note: str, target: str, as_json: bool) -> None:
    """Stop dispatching queue NAME (submissions are still accepted)."""
    with connect(target) as client:
        _show(client.pause_queue(name, note), as_json)


@queue_group.command("resume")
@click.argument("name")
@target_option
@json_option
@reports_errors
def queue_resume(name: str, target: str, as_json: bool) -> None:
    """Dispatch queue NAME again."""
    with connect(target) as client:
        _show(client.resume_queue(name), as_json)


@click.group("workers", cls=HelpGroup, invoke_without_command=True)
@click.option("-q", "--queue", help="Only workers of this queue.")
@target_option
@json_option
@click.pass_context
@reports_errors
def workers_group(ctx: click.Context, queue: str | None, target: str, as_json: bool) -> None:
    """List connected workers (or `taskyard workers drain ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(target) as client:
        sessions = client.workers(queue)
    if as_json:
        click.echo(json.dumps([asdict(w) for w in sessions], indent=2, default=str))
        return
    click.echo(f"{'WORKER':<24} {'SDK':<14} {'QUEUES':<16} {'CREDITS':>7} {'HELD':>5}  STATE")
    for w in sessions:
        click.echo(
            f"{w.worker_id:<24.24} {w.sdk:<14.14} {','.join(w.queues):<16.16} "
            f"{w.credits:>7} {w.leases_in_flight:>5}  {'draining' if w.draining else 'active'}"
        )


@workers_group.command("drain")
@click.argument("worker_id")
@target_option
@json_option
@reports_errors
def workers_drain(worker_id: str, target: str, as_json: bool) -> None:
    """Give WORKER_ID no new tasks; it finishes what it holds."""
    with connect(target) as client:
        sessions = client.drain_worker(worker_id)
    if as_json:
        click.echo(json.dumps([asdict(w) for w in sessions], indent=2, default=str))
        return
    click.echo(f"draining {worker_id} ({len(sessions)} session(s))")
