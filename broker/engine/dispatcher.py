"""Who gets which task: credits, claims and the routing of leases to sessions.

Every worker session grants credits. The dispatcher turns free credits into
claims, which the committer runs at the end of each transaction (so a task
inserted in a batch can be leased in the same commit) and hands back once the
transaction has committed. It never sends more leases to a session than the
session granted.

A session is left out of claims while it is *stalled* (one of its leases
lapsed: the worker went silent past a heartbeat timeout) until the worker
shows life again, and while its outbox holds more bytes than it may
(`LeaseHolder.room`: a stream that does not read). Tasks a session released
are never handed back to that session.

To avoid a useless claim query per event, each queue has a generation counter
that goes up whenever tasks may have become ready there (a submission, a
promotion, a lease coming back, a notification from another replica, the
fallback poll). A session is worth a claim on a queue only when the queue's
generation moved past the one at which its last claim came back short.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import Claimed, LeaseRef, NewTask
from broker.core.queues import QueueSettings
from broker.store import flow
from broker.store import leases as store
from broker.store import workflow_reads as workflows

log = logging.getLogger(__name__)

MAX_CLAIM = 1000
# Released task ids remembered per session, so that none goes back to it; a worker
# releases only while draining, so this is far more than one ever needs.
MAX_EXCLUDED = 10_000
# A first guess at the bytes one assignment takes on the stream, before any were
# measured; deliberately high, so that a stream's first claim cannot overshoot its room.
FIRST_TASK_BYTES_GUESS = 64 * 1024
# Queues and task types remembered as served by some worker (for metrics labels),
# at most this many of each: a worker declaring thousands gets no more.
MAX_SERVED = 1000


class StopReason(Enum):
    CANCEL_REQUESTED = 1
    LEASE_LOST = 2
    TIMED_OUT = 3


class LeaseHolder(Protocol):
    """A worker session as the dispatcher sees it."""

    key: str
    worker_id: str
    identity: str | None  # who authenticated the stream; only it may act on its leases
    types: tuple[str, ...]
    queues: tuple[str, ...]

    @property
    def open(self) -> bool: ...

    def held_leases(self) -> list[LeaseRef]: ...

    def deliver(self, claimed: list[Claimed]) -> int:
        """Queue the assignments for the worker; returns the bytes they take."""

    def stop_lease(self, ref: LeaseRef, reason: StopReason) -> None: ...

    def room(self) -> int:
        """Bytes the session's outbox may still take; 0 or less: deliver nothing now."""


@dataclass(eq=False)
class _Slot:
    holder: LeaseHolder
    credits: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    draining: bool = False
    # One of its leases lapsed (no heartbeat in time): nothing more until it shows life.
    stalled: bool = False
    # Task ids it released, in order, for claims to skip (at most MAX_EXCLUDED).
    excluded: dict[str, None] = field(default_factory=dict)
    # Tasks whose leases lapsed here, skipped by its claims until the worker reports them
    # (a heartbeat or completion restores the lease) or has had time to: handing a frozen
    # worker's own task back to it as a new attempt would make it run twice.
    lapsed: dict[str, None] = field(default_factory=dict)
    forget_lapsed: asyncio.TimerHandle | None = None

    def skipped(self) -> Collection[str]:
        if not self.lapsed:
            return self.excluded.keys()
        return self.excluded.keys() | self.lapsed.keys()


@dataclass
class Plan:
    """One session's claim on one queue in a commit: the credits reserved, then what came back."""

    slot: _Slot
    queue: str
    limit: int
    generation: int
    lease_id: int
    claimed: list[Claimed] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        *,
        wake: WakeFn,
        queues: QueueView | None = None,
        on_deliver: Callable[[str, Sequence[Claimed]], None] | None = None,
        lease_ids: Callable[[], int] = lambda: secrets.randbits(63),
        parents_budget: int = 1024 * 1024,
        report_window_s: float = 10.0,
    ) -> None:
        self._queues: QueueView = queues or _NoLimits()
        # Workflow nodes' assignments carry their parents' results up to this
        # many bytes in all (the payload limit); the rest go by reference.
        self._parents_budget = parents_budget
        # How long a stalled worker that shows life has to report the leases that lapsed
        # while it was silent (one heartbeat timeout: it heartbeats each lease sooner).
        self._report_window_s = report_window_s
        self._slots: dict[str, _Slot] = {}
        self._generation: dict[str, int] = {}
        # task id -> (session, lease id) for every lease this replica handed out
        # or adopted; every lookup checks the lease id, since a task can be
        # leased again while word of its previous lease is still on its way.
        self._owners: dict[str, tuple[LeaseHolder, int]] = {}
        # Lease ids fence results and name a lease to its holder: a cryptographic
        # generator, so that one cannot be predicted from others seen.
        self._lease_ids = lease_ids
        self._turn = 0
        self._frozen = False
        self._handed: list[Plan] = []
        # The committer's doorbell: rung whenever a claim may be worth running.
        self._wake = wake
        # Telemetry (broker/telemetry/tracing.py): told of every delivery, when given.
        self._on_deliver = on_deliver
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Bytes one assignment takes, as last measured (see _measure).
        self._task_bytes = FIRST_TASK_BYTES_GUESS
        # Every queue and task type a worker session declared since start (bounded).
        self.served_queues: set[str] = set()
        self.served_types: set[str] = set()

    # --- Sessions and credits ---------------------------------------------------------------

    def attach(self, holder: LeaseHolder) -> None:
        self._slots[holder.key] = _Slot(holder)
        for served, names in (
            (self.served_queues, holder.queues),
            (self.served_types, holder.types),
        ):
            served.update(names[: max(MAX_SERVED - len(served), 0)])

    def detach(self, holder: LeaseHolder) -> list[LeaseRef]:
        """Forget a session; return the leases it still held, for release."""
        slot = self._slots.pop(holder.key, None)
        if slot is not None and slot.forget_lapsed is not None:
            slot.forget_lapsed.cancel()
        refs = holder.held_leases()
        for ref in refs:
            if self._owners.get(ref.task_id) == (holder, ref.lease_id):
                del self._owners[ref.task_id]
        return refs

    def grant(self, holder: LeaseHolder, credits: int) -> None:
        slot = self._slots.get(holder.key)
        if slot is None or slot.draining:
            return  # a draining session's window stays closed
        slot.credits += credits
        if self._wants(slot):
            self._wake()

    def drain(self, holder: LeaseHolder) -> None:
        """No more tasks for this session: its credit window closes for good."""
        slot = self._slots.get(holder.key)
        if slot is not None:
            slot.draining = True
            slot.credits = 0

    def alive(self, holder: LeaseHolder) -> None:
        """The worker sent something: a stalled session gets tasks again."""
        slot = self._slots.get(holder.key)
        if slot is not None and slot.stalled:
            slot.stalled = False
            if slot.lapsed and slot.forget_lapsed is None:
                slot.forget_lapsed = asyncio.get_running_loop().call_later(
                    self._report_window_s, self._forget_lapsed, slot
                )
            if self._wants(slot):
                self._wake()

    def reported(self, holder: LeaseHolder, task_ids: Iterable[str]) -> None:
        """The session's heartbeats or completions for these tasks are recorded: whatever
        became of their lapsed leases, its claims need not skip them any longer."""
        slot = self._slots.get(holder.key)
        if slot is None or not slot.lapsed:
            return
        for task_id in task_ids:
            slot.lapsed.pop(task_id, None)

    def _forget_lapsed(self, slot: _Slot) -> None:
        """The worker had time to report its lapsed leases and did not: it dropped them."""
        slot.forget_lapsed = None
        if slot.stalled:
            return  # silent again: the next sign of life starts a new window
        slot.lapsed.clear()
        if self._wants(slot):
            self._wake()

    def room_freed(self, holder: LeaseHolder) -> None:
        """The session's outbox drained below its limit: it may be worth a claim again."""
        slot = self._slots.get(holder.key)
        if slot is not None and self._wants(slot):
            self._wake()

    def released(self, holder: LeaseHolder, task_ids: Iterable[str]) -> None:
        """The session handed these tasks back: never give them to it again."""
        slot = self._slots.get(holder.key)
        if slot is None:
            return
        for task_id in task_ids:
            slot.excluded[task_id] = None
        while len(slot.excluded) > MAX_EXCLUDED:
            del slot.excluded[next(iter(slot.excluded))]

    def freeze(self) -> None:
        """Stop leasing (shutdown); leases already out stay with their workers."""
        self._frozen = True

    def credits_of(self, holder: LeaseHolder) -> int:
        slot = self._slots.get(holder.key)
        return slot.credits if slot else 0

    # --- Readiness --------------------------------------------------------------------------

    def mark_ready(self, queues: Iterable[str]) -> None:
        rang = False
        for queue in queues:
            # Unseen queues count as generation 1 (see _wants): the first change is 2.
            self._generation[queue] = self._generation.get(queue, 1) + 1
            rang = True
        if rang and self.wants_claim():
            self._wake()

    def mark_all_ready(self) -> None:
        """Fallback poll: assume every queue any session serves may have work."""
        self.mark_ready({q for slot in self._slots.values() for q in slot.holder.queues})

    def wants_claim(self) -> bool:
        return not self._frozen and any(self._wants(s) for s in self._slots.values())

    def _wants(self, slot: _Slot) -> bool:
        if slot.credits <= 0 or slot.draining or slot.stalled or self._frozen:
            return False
        if slot.holder.room() <= 0:
            return False
        # A paused queue is never worth a claim; its resume marks it ready.
        return any(
            self._generation.get(q, 1) > slot.seen.get(q, 0) and not self._queues.paused(q)
            for q in slot.holder.queues
        )

    # --- Claims, inside the committer's transaction ----------------------------------------

    def hand_off(self, tasks: list[NewTask], now: int) -> dict[str, Claimed]:
        """Lease tasks being inserted straight to idle sessions, saving a claim.

        Only a session whose last claim on the queue found nothing (and no
        task became ready there since) qualifies, so nothing already waiting
        is overtaken. Higher priorities go first.
        """
        if self._frozen or not self._slots:
            return {}
        out: dict[str, Claimed] = {}
        plans: dict[str, Plan] = {}
        taken: dict[str, int] = {}  # bytes handed to each session in this call
        for t in sorted(tasks, key=lambda t: -t.priority):
            size = len(t.payload or b"") + ASSIGNMENT_OVERHEAD
            slot = self._idle_slot_for(t.queue, t.type, size, taken)
            if slot is None:
                continue
            plan = plans.get(slot.holder.key)
            if plan is None:
                plan = plans[slot.holder.key] = Plan(slot, t.queue, 0, 0, self._lease_ids())
            slot.credits -= 1
            plan.limit += 1
            taken[slot.holder.key] = taken.get(slot.holder.key, 0) + size
            timeouts = t.timeouts
            claimed = Claimed(
                id=t.id, type=t.type, queue=t.queue, priority=t.priority, attempt=1,
                max_attempts=t.max_attempts, labels=t.labels, created_at=t.created_at,
                run_at=t.run_at, lease_id=plan.lease_id,
                lease_expires_at=now + timeouts.heartbeat_us, payload=t.payload,
                worker_id=slot.holder.worker_id, heartbeat_timeout_us=timeouts.heartbeat_us,
                deadline_at=_after(now, timeouts.execution_us),
                soft_deadline_at=_after(now, timeouts.soft_us),
                trace_context=t.trace_context, leased_by=slot.holder.identity,
                workflow_id=t.workflow_id, node=t.node,
            )  # fmt: skip
            plan.claimed.append(claimed)
            out[t.id] = claimed
        self._handed.extend(plans.values())
        return out

    def _idle_slot_for(
        self, queue: str, type_: str, size: int, taken: dict[str, int]
    ) -> _Slot | None:
        if self._queues.paused(queue) or self._queues.limited(queue):
            return None  # limits are checked by a claim, in the database
        generation = self._generation.get(queue, 1)
        for slot in self._slots.values():
            if (
                slot.credits > 0
                and not slot.draining
                and not slot.stalled
                and slot.seen.get(queue, 0) >= generation
                and type_ in slot.holder.types
                and slot.holder.room() - taken.get(slot.holder.key, 0) >= size
            ):
                return slot
        return None

    def plan(self) -> list[Plan]:
        """Reserve credits for this transaction's claims, visiting sessions in turn.

        The result starts with the hand-offs made while inserting.
        """
        handed, self._handed = self._handed, []
        slots = list(self._slots.values())
        if not slots or self._frozen:
            return handed
        self._turn = (self._turn + 1) % len(slots)
        plans = []
        for slot in slots[self._turn :] + slots[: self._turn]:
            for queue in slot.holder.queues:
                if not self._wants(slot):
                    break
                generation = self._generation.get(queue, 1)
                if generation <= slot.seen.get(queue, 0) or self._queues.paused(queue):
                    continue
                # No more than the session's outbox has room for, by the last measure.
                fits = max(1, slot.holder.room() // self._task_bytes)
                limit = min(slot.credits, MAX_CLAIM, fits)
                slot.credits -= limit
                lease_id = self._lease_ids()
                plans.append(Plan(slot, queue, limit, generation, lease_id))
        return handed + plans

    async def claim(
        self,
        conn: AsyncConnection,
        plans: list[Plan],
        now: int,
        unwritten: Callable[[str], int] = lambda queue: 0,
    ) -> None:
        """Run the plans' claims; `unwritten` gives a queue's change in running tasks made
        earlier in this transaction (not yet in the counters flow control reads)."""
        leased_here: dict[str, int] = {}
        for p in plans:
            if p.generation == 0:
                continue  # handed off at insert
            holder = p.slot.holder
            settings = self._queues.get(p.queue)
            if settings is None or not settings.limited:
                p.claimed = await store.claim(
                    conn,
                    queue=p.queue,
                    types=holder.types,
                    limit=p.limit,
                    worker_id=holder.worker_id,
                    lease_id=p.lease_id,
                    now=now,
                    exclude=p.slot.skipped(),
                    leased_by=holder.identity,
                )
                continue
            limited = await flow.claim_limited(
                conn,
                settings=settings,
                types=holder.types,
                limit=p.limit,
                already=leased_here.get(p.queue, 0) + unwritten(p.queue),
                worker_id=holder.worker_id,
                lease_id=p.lease_id,
                now=now,
                exclude=p.slot.skipped(),
                leased_by=holder.identity,
            )
            p.claimed = limited.claimed
            leased_here[p.queue] = leased_here.get(p.queue, 0) + len(p.claimed)
            if limited.retry_at is not None:
                self._ready_at(p.queue, limited.retry_at - now)
        await self._with_parents(conn, plans)

    async def _with_parents(self, conn: AsyncConnection, plans: list[Plan]) -> None:
        """Workflow nodes just claimed learn how their parents ended (no query otherwise)."""
        nodes = [c.id for p in plans if p.generation for c in p.claimed if c.workflow_id]
        if not nodes:
            return
        found = await workflows.parent_outcomes(conn, nodes, budget=self._parents_budget)
        for p in plans:
            p.claimed = [
                c
                if c.id not in found
                else replace(c, parents=found[c.id][0], parents_truncated=found[c.id][1])
                for c in p.claimed
            ]

    def _ready_at(self, queue: str, delay_us: int) -> None:
        """Look at a rate-limited queue again when its next token is due."""
        if queue in self._timers:
            return

        def fire() -> None:
            self._timers.pop(queue, None)
            self.mark_ready([queue])

        loop = asyncio.get_running_loop()
        self._timers[queue] = loop.call_later(max(delay_us, 0) / 1_000_000, fire)

    def abandon(self, plans: list[Plan]) -> None:
        """The transaction failed: give the reserved credits back."""
        handed, self._handed = self._handed, []
        for p in [*handed, *plans]:
            p.slot.credits += p.limit
            p.claimed = []

    def deliver(self, plans: list[Plan]) -> list[LeaseRef]:
        """After commit: hand claimed tasks to their sessions.

        Returns leases whose session closed meanwhile, which the caller must
        release.
        """
        orphans: list[LeaseRef] = []
        for p in plans:
            p.slot.credits += p.limit - len(p.claimed)
            if len(p.claimed) < p.limit:
                p.slot.seen[p.queue] = max(p.slot.seen.get(p.queue, 0), p.generation)
            if not p.claimed:
                continue
            holder = p.slot.holder
            # A session that closed, or began to drain while this commit ran (its
            # `drain` answer is already queued: nothing may follow it), gets nothing.
            if not holder.open or p.slot.draining or self._slots.get(holder.key) is not p.slot:
                orphans.extend(LeaseRef(c.id, c.lease_id) for c in p.claimed)
                continue
            for c in p.claimed:
                self._supersede(c.id, c.lease_id)
                self._owners[c.id] = (holder, c.lease_id)
            self._measure(holder.deliver(p.claimed), len(p.claimed))
            if self._on_deliver is not None:
                self._on_deliver(holder.worker_id, p.claimed)
        return orphans

    def _supersede(self, task_id: str, lease_id: int) -> None:
        """A task leased again: the holder of its lapsed lease must drop that attempt now."""
        owner = self._owners.get(task_id)
        if owner is not None and owner[1] != lease_id:
            del self._owners[task_id]
            owner[0].stop_lease(LeaseRef(task_id, owner[1]), StopReason.LEASE_LOST)

    def _measure(self, size: int, count: int) -> None:
        """Learn what an assignment weighs: at once when heavier, slowly when lighter."""
        per_task = max(size // max(count, 1), 1)
        if per_task >= self._task_bytes:
            self._task_bytes = per_task
        else:
            self._task_bytes = max(per_task, (self._task_bytes * 3 + per_task) // 4)

    # --- Routing of lease events -----------------------------------------------------------

    def adopt(self, holder: LeaseHolder, refs: Iterable[LeaseRef]) -> None:
        for ref in refs:
            self._owners[ref.task_id] = (holder, ref.lease_id)

    def ended(self, refs: Iterable[LeaseRef]) -> None:
        for ref in refs:
            owner = self._owners.get(ref.task_id)
            if owner is not None and owner[1] == ref.lease_id:
                del self._owners[ref.task_id]

    def lapse(self, refs: Iterable[LeaseRef]) -> None:
        """These leases expired unreported; their tasks wait again (see store/leases.lapsed).

        Their sessions get nothing more until their workers show life, so that a
        frozen worker cannot take its own task back (nor anything else) meanwhile.
        The holders keep the leases: a late heartbeat or completion may still
        restore them, and a holder is told to drop one only when its task is
        leased again (`_supersede`).
        """
        for ref in refs:
            owner = self._owners.get(ref.task_id)
            if owner is None or owner[1] != ref.lease_id:
                continue
            slot = self._slots.get(owner[0].key)
            if slot is not None:
                slot.stalled = True
                if len(slot.lapsed) < MAX_EXCLUDED:
                    slot.lapsed[ref.task_id] = None

    def stop(self, refs: Iterable[LeaseRef], reason: StopReason) -> None:
        """Tell the sessions holding these leases to stop them (if they still do)."""
        for ref in refs:
            owner = self._owners.get(ref.task_id)
            if owner is None or owner[1] != ref.lease_id:
                continue
            if reason is not StopReason.CANCEL_REQUESTED:
                del self._owners[ref.task_id]
            owner[0].stop_lease(ref, reason)

    @property
    def sessions(self) -> int:
        return len(self._slots)

    @property
    def leases_in_flight(self) -> int:
        """Leases this replica handed out or adopted that have not ended."""
        return len(self._owners)


# What an assignment takes on the stream besides its payload (ids, type, queue,
# timestamps), for the hand-off's room check; measured ones replace it in plan().
ASSIGNMENT_OVERHEAD = 200


class QueueView(Protocol):
    """What dispatch needs to know of the queues (see queue_registry.py)."""

    def get(self, name: str) -> QueueSettings | None: ...

    def paused(self, name: str) -> bool: ...

    def limited(self, name: str) -> bool: ...


class _NoLimits:
    def get(self, name: str) -> QueueSettings | None:
        return None

    def paused(self, name: str) -> bool:
        return False

    def limited(self, name: str) -> bool:
        return False


class WakeFn(Protocol):
    def __call__(self) -> None: ...


def _after(now: int, span: int | None) -> int | None:
    return None if span is None else now + span
