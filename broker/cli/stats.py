"""`taskyard stats`: live queue figures, the history of a window, and what nothing will run."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import click

from broker.cli.common import json_option, reports_errors, seconds, target_option
from broker.cli.credentials import connect
from broker.cli.hints import serves
from broker.cli.views import span
from worker_sdk import Distribution, QueueStats, TaskState, TaskStats, TaskyardError, WorkerInfo

WAITING = (TaskState.SCHEDULED, TaskState.PENDING, TaskState.RETRYING)


@click.command("stats", short_help="Live queue figures and the history of a window.")
@click.option("-q", "--queue", help="Only this queue.")
@click.option("-t", "--type", "type_", help="Only this task type (history only).")
@click.option("--since", default="24h", show_default=True, help="History window, e.g. 1h or 7d.")
@target_option
@json_option
@reports_errors
def stats(queue: str | None, type_: str | None, since: str, target: str, as_json: bool) -> None:
    """Live queue figures and the history of a window.

    Queues and task types with waiting tasks that no connected worker serves
    (or whose queue is paused) are named at the end.
    """
    start = datetime.now(UTC) - timedelta(seconds=seconds(since, "--since") or 0)
    with connect(target) as client:
        live = client.queue_stats(queue)
        total, groups = client.task_stats(start=start, queue=queue, type=type_)
        try:
            workers: list[WorkerInfo] | None = client.workers(queue)
        except TaskyardError:
            workers = None  # not allowed to list them: no worker column, no notes
    if as_json:
        data = {
            "queues": [asdict(q) | {"waiting": waiting(q)} for q in live],
            "total": asdict(total),
            "groups": [asdict(g) for g in groups],
            "notes": notes(live, groups, workers),
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _live_table(live, workers)
    click.echo(f"\nlast {since}: {_summary(total)}")
    for g in groups:
        click.echo(f"  {g.queue}/{g.type}: {_group(g)}")
    for note in notes(live, groups, workers):
        click.echo(f"note: {note}")


def waiting(q: QueueStats) -> int:
    return sum(q.counts.get(s, 0) for s in WAITING)


def _live_table(live: list[QueueStats], workers: list[WorkerInfo] | None) -> None:
    click.echo(
        f"{'QUEUE':<20} {'STATE':<7} {'WAITING':>8} {'RUNNING':>8} {'OLDEST':>8} {'/MIN':>6} "
        f"{'/HOUR':>7} {'WORKERS':>8}"
    )
    for q in live:
        oldest = span(q.oldest_pending_age) if q.oldest_pending_age is not None else "-"
        count = "?" if workers is None else str(len(_takers(workers, q.queue)))
        click.echo(
            f"{q.queue:<20.20} {'paused' if q.paused else 'active':<7} {waiting(q):>8} "
            f"{q.running:>8} {oldest:>8} {q.finished_last_minute:>6} {q.finished_last_hour:>7} "
            f"{count:>8}"
        )


def _takers(workers: list[WorkerInfo], queue: str) -> list[WorkerInfo]:
    return [w for w in workers if queue in w.queues and not w.draining]


def _ms(d: Distribution, which: str) -> str:
    """A percentile in ms, or an em dash when nothing was measured (never 0.0 ms)."""
    return "—" if d.count == 0 else f"{getattr(d, which) * 1000:.1f} ms"


def _summary(t: TaskStats) -> str:
    rate = f"{t.success_rate:.1%} success" if t.succeeded + t.failed else "none finished"
    return (
        f"{t.submitted} submitted, {t.succeeded} succeeded, {t.failed} failed, "
        f"{t.cancelled} cancelled, {t.expired} expired ({rate}); run p50 "
        f"{_ms(t.run_time, 'p50')}, p99 {_ms(t.run_time, 'p99')}; wait p50 "
        f"{_ms(t.wait_time, 'p50')}"
    )


def _group(g: TaskStats) -> str:
    run = "never ran" if g.run_time.count == 0 else f"run p95 {_ms(g.run_time, 'p95')}"
    return (
        f"{g.succeeded} succeeded, {g.failed} failed, {g.cancelled} cancelled, "
        f"{g.retried} retried; {run}"
    )


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def notes(
    live: list[QueueStats], groups: list[TaskStats], workers: list[WorkerInfo] | None
) -> list[str]:
    """Queues and types whose waiting tasks nothing will run."""
    out = []
    idle_queues = set()
    for q in live:
        if not waiting(q):
            continue
        if q.paused:
            out.append(
                f"queue {q.queue!r} is paused with {_tasks(waiting(q))} waiting; "
                f"`taskyard queue resume {q.queue}`"
            )
            idle_queues.add(q.queue)
        elif workers is not None and not _takers(workers, q.queue):
            out.append(
                f"queue {q.queue!r} has {_tasks(waiting(q))} waiting and no connected worker "
                "takes tasks from it"
            )
            idle_queues.add(q.queue)
    if workers is None:
        return out
    for g in groups:
        unfinished = g.submitted - g.succeeded - g.failed - g.cancelled - g.expired
        if (
            unfinished > 0
            and g.queue not in idle_queues
            and not any(serves(w, g.queue, g.type) for w in workers)
        ):
            out.append(
                f"no connected worker handles type {g.type!r} in queue {g.queue!r} "
                f"(unfinished tasks of it in this window: {unfinished})"
            )
    return out
