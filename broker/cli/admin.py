"""Operator commands: `taskyard queue …`, `taskyard workers`, `taskyard stats`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from broker.cli.credentials import connect
from broker.cli.tasks import json_option, reports_errors, retry_policy, seconds, target_option
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
    data = asdict(queue)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if value not in (None, "", {}, False):
            click.echo(f"{key:>22}: {value}")


@click.group("queue")
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
        click.echo(json.dumps([asdict(q) for q in queues], indent=2, default=str))
        return
    click.echo(f"{'QUEUE':<24} {'STATE':<7} {'CONCURRENCY':>11} {'RATE':>12} {'DEPTH':>8}")
    for q in queues:
        rate = f"{q.rate_limit[0]}/{q.rate_limit[1]:g}s" if q.rate_limit else "-"
        click.echo(
            f"{q.name:<24.24} {'paused' if q.paused else 'active':<7} "
            f"{q.max_concurrency or '-':>11} {rate:>12} {q.max_depth or '-':>8}"
        )


@queue_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Even while tasks wait or run in it.")
@target_option
@reports_errors
def queue_delete(name: str, force: bool, target: str) -> None:
    """Delete queue NAME's settings (its tasks are untouched)."""
    with connect(target) as client:
        client.delete_queue(name, force=force)
    click.echo(f"deleted queue {name}")


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


@click.group("workers", invoke_without_command=True)
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
@reports_errors
def workers_drain(worker_id: str, target: str) -> None:
    """Give WORKER_ID no new tasks; it finishes what it holds."""
    with connect(target) as client:
        sessions = client.drain_worker(worker_id)
    click.echo(f"draining {worker_id} ({len(sessions)} session(s))")


@click.command("stats")
@click.option("-q", "--queue", help="Only this queue.")
@click.option("-t", "--type", "type_", help="Only this task type (history only).")
@click.option("--since", default="24h", show_default=True, help="History window, e.g. 1h or 7d.")
@target_option
@json_option
@reports_errors
def stats(queue: str | None, type_: str | None, since: str, target: str, as_json: bool) -> None:
    """Live queue figures and the history of a window."""
    start = datetime.now(UTC) - timedelta(seconds=seconds(since, "--since") or 0)
    with connect(target) as client:
        live = client.queue_stats(queue)
        total, groups = client.task_stats(start=start, queue=queue, type=type_)
    if as_json:
        data = {
            "queues": [asdict(q) for q in live],
            "total": asdict(total),
            "groups": [asdict(g) for g in groups],
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(
        f"{'QUEUE':<20} {'PENDING':>8} {'RUNNING':>8} {'OLDEST':>8} {'/MIN':>6} {'/HOUR':>7}"
    )
    for q in live:
        pending = sum(
            n for s, n in q.counts.items() if s.value in ("pending", "scheduled", "retrying")
        )
        oldest = f"{q.oldest_pending_age:.0f}s" if q.oldest_pending_age is not None else "-"
        click.echo(
            f"{q.queue:<20.20} {pending:>8} {q.running:>8} {oldest:>8} "
            f"{q.finished_last_minute:>6} {q.finished_last_hour:>7}"
        )
    click.echo(
        f"\nlast {since}: {total.submitted} submitted, {total.succeeded} succeeded, "
        f"{total.failed} failed ({total.success_rate:.1%} success), run p50 "
        f"{total.run_time.p50 * 1000:.1f} ms p99 {total.run_time.p99 * 1000:.1f} ms, wait p50 "
        f"{total.wait_time.p50 * 1000:.1f} ms"
    )
    for g in groups:
        click.echo(
            f"  {g.queue}/{g.type}: {g.succeeded} ok, {g.failed} failed, {g.retried} retried, "
            f"run p95 {g.run_time.p95 * 1000:.1f} ms"
        )
