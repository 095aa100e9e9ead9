"""Claims for queues with limits: global concurrency, a rate limit, concurrency keys.

Unlimited queues take the fast path in leases.claim. A limited queue's claims
lock its row (on PostgreSQL) so that replicas take turns, read the running
count from the counters, take tokens from the bucket, and, with concurrency
keys, pick candidates in order while no key passes its limit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import Claimed
from broker.core.queues import Bucket, QueueSettings, next_token_at, refill, within_key_limit
from broker.core.task_state import TaskState
from broker.store import queues
from broker.store.dialect import is_pg
from broker.store.leases import claim, claim_ids
from broker.store.schema import state_is, task

_S = TaskState
KEY_WINDOW = 200


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    claimed: list[Claimed]
    retry_at: int | None  # when the rate limit allows more, if it held this claim back


async def claim_limited(
    conn: AsyncConnection,
    *,
    settings: QueueSettings,
    types: Sequence[str],
    limit: int,
    already: int,
    worker_id: str,
    lease_id: int,
    now: int,
    leased_by: str | None = None,
    exclude: Collection[str] = (),
) -> LimitedClaim:
    """Lease up to `limit` tasks within the queue's limits.

    `already` counts this queue's tasks leased earlier in the same transaction
    (not yet in the counters).
    """
    name = settings.name
    await queues.lock(conn, name)
    want = limit
    if settings.max_concurrency is not None:
        running = await queues.running(conn, name) + already
        want = min(want, settings.max_concurrency - running)
    bucket = None
    if settings.rate_limit is not None and settings.rate_interval_us is not None:
        stored = await queues.bucket(conn, name)
        bucket = refill(
            stored, limit=settings.rate_limit, interval_us=settings.rate_interval_us, now=now
        )
        want = min(want, int(bucket.tokens))
    claimed: list[Claimed] = []
    if want > 0:
        if settings.concurrency_key_limit is not None:
            ids = await _pick_within_keys(conn, settings, types, want, now, exclude)
            if ids:
                claimed = await claim_ids(
                    conn,
                    ids=ids,
                    types=types,
                    worker_id=worker_id,
                    lease_id=lease_id,
                    now=now,
                    leased_by=leased_by,
                )
        else:
            claimed = await claim(
                conn,
                queue=name,
                types=types,
                limit=want,
                worker_id=worker_id,
                lease_id=lease_id,
                now=now,
                leased_by=leased_by,
                exclude=exclude,
            )
    retry_at = None
    if bucket is not None:
        await queues.take_tokens(conn, name, bucket, len(claimed))
        left = Bucket(bucket.tokens - len(claimed), bucket.at)
        if left.tokens < 1 and len(claimed) < limit:
            # The rate, not the backlog, stopped this claim: come back for the next token.
            assert settings.rate_limit is not None and settings.rate_interval_us is not None
            retry_at = next_token_at(
                left, limit=settings.rate_limit, interval_us=settings.rate_interval_us
            )
    return LimitedClaim(claimed, retry_at)


async def _pick_within_keys(
    conn: AsyncConnection,
    settings: QueueSettings,
    types: Sequence[str],
    want: int,
    now: int,
    exclude: Collection[str],
) -> list[str]:
    conditions = [
        state_is(_S.PENDING, column=task.c.state),
        task.c.queue == settings.name,
        task.c.type.in_(list(types)),
        sa.or_(task.c.expire_at.is_(None), task.c.expire_at > now),
    ]
    if exclude:
        conditions.append(task.c.id.not_in(list(exclude)))
    candidates = (
        sa.select(task.c.id, task.c.concurrency_key)
        .where(*conditions)
        .order_by(task.c.priority.desc(), task.c.run_at, task.c.id)
        .limit(max(want * 4, KEY_WINDOW))
    )
    if is_pg(conn):
        candidates = candidates.with_for_update(skip_locked=True)
    rows = [(r.id, r.concurrency_key) for r in await conn.execute(candidates)]
    keys = {k for _, k in rows if k is not None}
    running: dict[str, int] = {}
    if keys:
        counted = await conn.execute(
            sa.select(task.c.concurrency_key, sa.func.count())
            .where(sa.text("state = 3 AND concurrency_key IS NOT NULL"))
            .where(task.c.concurrency_key.in_(list(keys)))
            .group_by(task.c.concurrency_key)
        )
        running = {key: int(n) for key, n in counted}
    assert settings.concurrency_key_limit is not None
    return within_key_limit(rows, running, key_limit=settings.concurrency_key_limit, want=want)
