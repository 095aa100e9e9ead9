"""Throughput and broker memory with a large backlog waiting, against a short queue.

Issue 20's fourth target: with 1,000,000 tasks waiting, workers should take
tasks about as fast as from a queue holding only what they will run, and the
broker's memory should not grow with the backlog. Each run fills a fresh
database through the API (`--backlog` no-op tasks, workers stopped), reads the
broker's RSS, starts the workers and times the first `--tasks` completions
(first start to last finish, as `make bench`'s process rate), then reads RSS
again. The comparison is the same drain from a queue holding just `--tasks`
tasks, in the same sitting (`python -m bench --scenario backlog`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.soak import rss_mb

Submit = Callable[[list[Any], int], Awaitable[None]]
DoneAtLeast = Callable[[str, int], Awaitable[tuple[int, int, int]]]


async def drain_rate(
    setup: Any, submit: Submit, done_at_least: DoneAtLeast, waiting: int, sample: int
) -> dict[str, float]:
    """Fill `waiting` tasks, then time the first `sample` of them through the workers."""
    async with setup:
        clients = setup.clients(timeout=600)
        await submit(clients, waiting)
        for client in clients:
            await client.close()
        rss_before = rss_mb(setup.broker_pid)
        await setup.start_workers()
        done, first, last = await done_at_least(setup.db_url, sample)
        rss_after = rss_mb(setup.broker_pid)
    return {"rate": done / ((last - first) / 1e6), "rss_before": rss_before, "rss_after": rss_after}


async def backlog_cost(
    make_setup: Callable[[int], Any],
    submit: Submit,
    done_at_least: DoneAtLeast,
    backlog: int,
    sample: int,
) -> dict[str, float]:
    short = await drain_rate(make_setup(0), submit, done_at_least, sample, sample)
    long = await drain_rate(make_setup(1), submit, done_at_least, backlog, sample)
    return {
        "process_short_queue_per_s": short["rate"],
        "process_with_backlog_per_s": long["rate"],
        "backlog_cost_pct": 100 * (1 - long["rate"] / short["rate"]),
        "rss_short_queue_mb": short["rss_after"],
        "rss_backlog_filled_mb": long["rss_before"],
        "rss_backlog_draining_mb": long["rss_after"],
    }
