"""Schedule policy: which fire times a spec has, and what each becomes.

Spec validation, excluded dates, the first fire time after a change or a
pause, jitter, the catch-up and overlap policies (with `max_instances`) that
turn due fire times into a plan (run, skip, buffer, or record as missed), and
the stored records. The calendar arithmetic underneath (zones, DST, cron) is
`broker.core.cron`, recurrence rules are `broker.core.rrule`.

Nothing here reads a clock or the database. The ticker passes `now`, so a
year of an hourly cron is simulated in a unit test by calling `plan_fires`
8,760 times. Instants are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, time, tzinfo
from enum import IntEnum

from broker.core.cron import (
    DAY,
    HOUR,
    MINUTE,
    REASON,
    SECOND,
    load_zone,
    next_instant,
    parse_cron,
    parsed_cron,
    to_dt,
    to_us,
)
from broker.core.rrule import Rule, parse_rule, parsed_rule
from broker.errors import InvalidArgument

MAX_SPAN = 366 * DAY
MAX_JITTER = HOUR
DEFAULT_GRACE = MINUTE
DEFAULT_CATCHUP_LIMIT = 100
MAX_CATCHUP_LIMIT = 1000
MAX_INSTANCES = 1000
MAX_EXCLUSIONS = 1000
# Fire times one plan looks at, at most: a long outage of a frequent
# schedule is worked off in several commits instead of one long stall.
PLAN_BUDGET = 2000


class TriggerKind(IntEnum):
    CRON = 1
    INTERVAL = 2
    ONCE = 3
    RRULE = 4


class Catchup(IntEnum):
    """Values equal the protobuf CatchupPolicy numbers."""

    SKIP = 1
    ONE = 2
    ALL = 3


class Overlap(IntEnum):
    """Values equal the protobuf OverlapPolicy numbers."""

    SKIP = 1
    BUFFER_ONE = 2
    ALLOW_ALL = 3


class FireResult(IntEnum):
    """Values equal the protobuf ScheduleFireResult numbers."""

    STARTED = 1
    SKIPPED = 2
    MISSED = 3
    BUFFERED = 4
    FAILED = 5


# --- Specs ----------------------------------------------------------------------------------


# An excluded span of dates: ISO 8601 (first, last), both included.
DateSpan = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Spec:
    kind: TriggerKind
    cron: str | None = None
    every_us: int | None = None
    once_at: int | None = None
    time_zone: str = ""
    start_at: int | None = None
    end_at: int | None = None
    jitter_us: int = 0
    rrule: str | None = None
    exclusions: tuple[DateSpan, ...] = ()

    @property
    def zone(self) -> tzinfo:
        return load_zone(self.time_zone)

    @property
    def end(self) -> int | None:
        """The last instant that may fire: end_time, or a rule's UNTIL if earlier."""
        until = self._rule().until_us if self.kind is TriggerKind.RRULE else None
        ends = [t for t in (self.end_at, until) if t is not None]
        return min(ends) if ends else None

    def next_after(self, after: int) -> int | None:
        """The first fire time strictly after `after`, within start and end, not excluded."""
        if self.start_at is not None:
            after = max(after, self.start_at - 1)
        end = self.end
        for _ in range(len(self.exclusions) + 2):
            found = self._next(after)
            if found is None or (end is not None and found > end):
                return None
            resume = excluded_until(self, found)
            if resume is None:
                return found
            if resume < 0:  # excluded through the last date there is
                return None
            after = max(found, resume - 1)
        raise AssertionError("a fire time skipped more exclusions than the spec has")

    def _rule(self) -> Rule:
        assert self.rrule is not None
        return parsed_rule(self.rrule, self.start_at, self.time_zone)

    def _next(self, after: int) -> int | None:
        if self.kind is TriggerKind.CRON:
            assert self.cron is not None
            return next_instant(parsed_cron(self.cron), self.zone, after)
        if self.kind is TriggerKind.RRULE:
            return next_instant(self._rule(), self.zone, after)
        if self.kind is TriggerKind.INTERVAL:
            assert self.every_us is not None
            anchor = self.start_at or 0
            if after < anchor:
                return anchor
            return anchor + ((after - anchor) // self.every_us + 1) * self.every_us
        assert self.once_at is not None
        return self.once_at if self.once_at > after else None

    def upcoming(self, after: int, count: int) -> list[int]:
        out: list[int] = []
        at: int | None = after
        while len(out) < count and at is not None:
            at = self.next_after(at)
            if at is not None:
                out.append(at)
        return out


@functools.lru_cache(maxsize=512)
def _merged(exclusions: tuple[DateSpan, ...]) -> tuple[list[int], list[int]]:
    """Excluded spans as sorted, disjoint (first, last) date ordinals, in two lists for bisect."""
    spans = sorted(
        (date.fromisoformat(a).toordinal(), date.fromisoformat(b).toordinal())
        for a, b in exclusions
    )
    firsts: list[int] = []
    lasts: list[int] = []
    for first, last in spans:
        if lasts and first <= lasts[-1] + 1:
            lasts[-1] = max(lasts[-1], last)
        else:
            firsts.append(first)
            lasts.append(last)
    return firsts, lasts


def excluded_until(spec: Spec, at: int) -> int | None:
    """None if `at`'s local date is not excluded; else the first instant after its span.

    -1 when the span runs through the last representable date.
    """
    if not spec.exclusions:
        return None
    zone = spec.zone
    day = to_dt(at).astimezone(zone).date().toordinal()
    firsts, lasts = _merged(spec.exclusions)
    index = bisect.bisect_right(firsts, day) - 1
    if index < 0 or lasts[index] < day:
        return None
    if lasts[index] >= date.max.toordinal():
        return -1
    return to_us(datetime.combine(date.fromordinal(lasts[index] + 1), time(), tzinfo=zone))


def check_exclusions(exclusions: tuple[DateSpan, ...]) -> None:
    if len(exclusions) > MAX_EXCLUSIONS:
        raise InvalidArgument(
            f"spec.exclusions has {len(exclusions)} ranges; the limit is {MAX_EXCLUSIONS}",
            reason=REASON,
        )
    for index, (first, last) in enumerate(exclusions):
        where = f"spec.exclusions[{index}]"
        days = []
        for name, text in (("start_date", first), ("end_date", last)):
            try:
                day = date.fromisoformat(text)
            except ValueError:
                day = None
            if day is None or len(text) != 10 or day.year < 1970:
                raise InvalidArgument(
                    f"{where}.{name} {text!r} is not a date such as 2026-12-24 (from 1970-01-01)",
                    reason=REASON,
                )
            days.append(day)
        if days[1] < days[0]:
            raise InvalidArgument(f"{where}.end_date is before its start_date", reason=REASON)


def check_spec(spec: Spec, *, now: int) -> None:
    """INVALID_ARGUMENT, naming the field, unless the spec can fire."""
    zone = load_zone(spec.time_zone)
    check_exclusions(spec.exclusions)
    if spec.kind is TriggerKind.CRON:
        parse_cron(spec.cron or "")
    elif spec.kind is TriggerKind.RRULE:
        anchor = None
        if spec.start_at is not None:
            anchor = to_dt(spec.start_at).astimezone(zone).replace(tzinfo=None)
        parse_rule(spec.rrule or "", anchor=anchor, zone=zone)
    elif spec.kind is TriggerKind.INTERVAL:
        every = spec.every_us or 0
        if not SECOND <= every <= MAX_SPAN:
            raise InvalidArgument(
                f"spec.interval.every must be from 1s to 366 days, got {every}µs", reason=REASON
            )
    if not 0 <= spec.jitter_us <= MAX_JITTER:
        raise InvalidArgument(
            f"spec.jitter must be from 0 to 1 hour, got {spec.jitter_us}µs", reason=REASON
        )
    if spec.start_at is not None and spec.end_at is not None and spec.end_at < spec.start_at:
        raise InvalidArgument("spec.end_time is before spec.start_time", reason=REASON)
    if spec.kind is TriggerKind.ONCE:
        _check_once(spec)
    elif spec.next_after((spec.start_at or now) - 1) is None and spec.end is None:
        what = (
            f"spec.recurrence.rule {spec.rrule!r}"
            if spec.kind is TriggerKind.RRULE
            else f"spec.cron.expression {spec.cron!r}"
        )
        raise InvalidArgument(f"{what} never matches a date that is not excluded", reason=REASON)


def _check_once(spec: Spec) -> None:
    at = spec.once_at
    if at is None:
        raise InvalidArgument("spec.once.fire_time is required", reason=REASON)
    if (spec.start_at is not None and at < spec.start_at) or (
        spec.end_at is not None and at > spec.end_at
    ):
        raise InvalidArgument(
            "spec.once.fire_time lies outside spec.start_time … spec.end_time", reason=REASON
        )
    if excluded_until(spec, at) is not None:
        raise InvalidArgument("spec.once.fire_time falls on an excluded date", reason=REASON)


def first_fire(spec: Spec, *, base: int, fired_through: int | None) -> int | None:
    """The first fire time at or after `base` that has not been processed yet.

    A one-shot whose instant has passed still fires (late) unless it already
    fired; that is how a one-shot created a moment too late still runs.
    """
    floor = base - 1 if fired_through is None else max(base - 1, fired_through)
    if spec.kind is TriggerKind.ONCE and spec.once_at is not None:
        if fired_through is None or spec.once_at > fired_through:
            return spec.once_at
        return None
    return spec.next_after(floor)


def resume_fire(spec: Spec, *, now: int, fired_through: int | None) -> int | None:
    """After a pause, fire times that passed are not run: the next one at or after now."""
    floor = now - 1 if fired_through is None else max(now - 1, fired_through)
    return spec.next_after(floor)


def jitter_offset(key: str, fire_time: int, jitter_us: int) -> int:
    """A delay in [0, jitter) that is the same each time a fire time is planned."""
    if jitter_us <= 0:
        return 0
    digest = hashlib.sha256(f"{key}/{fire_time}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % jitter_us


# --- Policies and plans ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policies:
    misfire_grace_us: int = DEFAULT_GRACE
    catchup: Catchup = Catchup.ONE
    catchup_limit: int = DEFAULT_CATCHUP_LIMIT
    overlap: Overlap = Overlap.SKIP
    # Runs that may be unfinished at once before the overlap policy steps in.
    max_instances: int = 1

    def problems(self) -> list[str]:
        out = []
        if not SECOND <= self.misfire_grace_us <= MAX_SPAN:
            out.append(
                f"policies.misfire_grace must be from 1s to 366 days, got {self.misfire_grace_us}µs"
            )
        if not 1 <= self.catchup_limit <= MAX_CATCHUP_LIMIT:
            out.append(
                f"policies.catchup_limit must be from 1 to {MAX_CATCHUP_LIMIT}, "
                f"got {self.catchup_limit}"
            )
        if not 1 <= self.max_instances <= MAX_INSTANCES:
            out.append(
                f"policies.max_instances must be from 1 to {MAX_INSTANCES}, "
                f"got {self.max_instances}"
            )
        elif self.max_instances > 1 and self.overlap is Overlap.ALLOW_ALL:
            out.append(
                "policies.max_instances caps runs for the skip and buffer_one overlap "
                "policies; allow_all has no cap (set overlap to skip or buffer_one)"
            )
        return out


@dataclass(frozen=True, slots=True)
class FireState:
    """What a plan needs to know about a schedule besides its spec and policies."""

    next_fire_at: int | None
    buffered_at: int | None = None
    running: int = 0  # runs whose task has not finished


@dataclass(frozen=True, slots=True)
class Fire:
    result: FireResult
    fire_time: int
    last_missed: int | None = None  # MISSED: the range's last fire time
    count: int = 1  # MISSED: how many fire times the record stands for
    unfinished: int = 0  # SKIPPED: how many runs were unfinished


@dataclass(frozen=True, slots=True)
class FirePlan:
    fires: tuple[Fire, ...]
    next_fire_at: int | None
    buffered_at: int | None
    fired_through: int | None  # the latest nominal fire time this plan processed

    def count(self, result: FireResult) -> int:
        return sum(f.count for f in self.fires if f.result is result)


class _Runner:
    """Applies the overlap policy, with its cap of unfinished runs, to fires in time order.

    Runs started by the plan count as unfinished for the rest of it: a plan
    never knows that one of its own tasks finished.
    """

    def __init__(self, policies: Policies, state: FireState) -> None:
        self.overlap = policies.overlap
        self.cap = policies.max_instances
        self.running = int(state.running)
        self.buffered = state.buffered_at
        self.fires: list[Fire] = []
        if self.buffered is not None and self._room():
            self.fires.append(Fire(FireResult.STARTED, self.buffered))
            self.buffered = None
            self.running += 1

    def _room(self) -> bool:
        return self.overlap is Overlap.ALLOW_ALL or self.running < self.cap

    def run(self, at: int) -> None:
        if self._room():
            self.fires.append(Fire(FireResult.STARTED, at))
            self.running += 1
        elif self.overlap is Overlap.BUFFER_ONE and self.buffered is None:
            self.fires.append(Fire(FireResult.BUFFERED, at))
            self.buffered = at
        else:
            self.fires.append(Fire(FireResult.SKIPPED, at, unfinished=self.running))

    def missed(self, times: list[int], count: int) -> None:
        if count:
            self.fires.append(Fire(FireResult.MISSED, times[0], times[1], count))


def plan_fires(
    spec: Spec, policies: Policies, state: FireState, now: int, *, budget: int = PLAN_BUDGET
) -> FirePlan:
    """Decide every fire time due by `now`: run, skip, buffer or record as missed.

    Fire times later than `now - misfire_grace` are on time and run (subject
    to the overlap policy). Older ones are missed; the catch-up policy runs
    none of them (SKIP), the latest (ONE, unless an on-time one runs anyway)
    or the latest `catchup_limit` (ALL). At most `budget` fire times are
    looked at; the rest wait for the next plan, which continues where this
    one stopped.
    """
    runner = _Runner(policies, state)
    keep_n = {Catchup.SKIP: 0, Catchup.ONE: 1, Catchup.ALL: policies.catchup_limit}[
        policies.catchup
    ]
    edge = now - policies.misfire_grace_us
    kept: list[int] = []
    missed: list[int] = []  # [first, last]
    count = 0
    at = state.next_fire_at
    steps = 0
    while at is not None and at < edge and steps < budget:
        kept.append(at)
        if len(kept) > keep_n:
            dropped = kept.pop(0)
            missed = [missed[0] if missed else dropped, dropped]
            count += 1
        at = spec.next_after(at)
        steps += 1
    if at is not None and at < edge:
        # Out of budget inside the missed stretch: the kept ones are decided later.
        runner.missed(missed, count)
        resume = kept[0] if kept else at
        return _plan(runner, resume, missed[-1] if missed else None)
    on_time: list[int] = []
    while at is not None and at <= now and steps < budget:
        on_time.append(at)
        at = spec.next_after(at)
        steps += 1
    if policies.catchup is Catchup.ONE and kept and on_time:
        missed, count = [missed[0] if missed else kept[0], kept[0]], count + 1
        kept = []
    runner.missed(missed, count)
    for fire_time in kept + on_time:
        runner.run(fire_time)
    processed = (kept + on_time)[-1:] or missed[-1:]
    return _plan(runner, at, processed[0] if processed else None)


def _plan(runner: _Runner, next_fire_at: int | None, through: int | None) -> FirePlan:
    return FirePlan(tuple(runner.fires), next_fire_at, runner.buffered, through)


# --- Records ----------------------------------------------------------------------------------


def spec_to_json(spec: Spec) -> str:
    data = {k: v for k, v in asdict(spec).items() if v not in (None, "", 0, ()) or k == "kind"}
    data["kind"] = int(spec.kind)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def spec_from_json(text: str) -> Spec:
    data = json.loads(text)
    data["kind"] = TriggerKind(data["kind"])
    if "exclusions" in data:
        data["exclusions"] = tuple((first, last) for first, last in data["exclusions"])
    return Spec(**data)


def policies_to_json(p: Policies) -> str:
    return json.dumps(
        {
            "misfire_grace_us": p.misfire_grace_us,
            "catchup": int(p.catchup),
            "catchup_limit": p.catchup_limit,
            "overlap": int(p.overlap),
            "max_instances": p.max_instances,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def policies_from_json(text: str) -> Policies:
    data = json.loads(text)
    return Policies(
        misfire_grace_us=data["misfire_grace_us"],
        catchup=Catchup(data["catchup"]),
        catchup_limit=data["catchup_limit"],
        overlap=Overlap(data["overlap"]),
        max_instances=data.get("max_instances", 1),  # absent before revision 0011
    )


@dataclass(frozen=True, slots=True)
class Counts:
    started: int = 0
    skipped: int = 0
    missed: int = 0
    failed: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.started + other.started,
            self.skipped + other.skipped,
            self.missed + other.missed,
            self.failed + other.failed,
        )


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule; `running` counts its runs whose task has not finished."""

    id: str
    name: str
    description: str
    spec: Spec
    policies: Policies
    template: bytes
    paused: bool
    pause_note: str | None
    revision: int
    next_fire_at: int | None
    buffered_at: int | None
    fired_through: int | None
    last_task_id: str | None
    counts: Counts
    created_at: int
    updated_at: int
    running: int = 0
    owner: str | None = None  # the identity that created it (None: no auth, or the file)

    @property
    def state(self) -> ScheduleState:
        if self.paused:
            return ScheduleState.PAUSED
        if self.next_fire_at is None and self.buffered_at is None:
            return ScheduleState.COMPLETED
        return ScheduleState.ACTIVE

    @property
    def fire_state(self) -> FireState:
        return FireState(self.next_fire_at, self.buffered_at, running=self.running)


def with_settings(
    before: ScheduleRecord,
    *,
    description: str,
    spec: Spec,
    policies: Policies,
    template: bytes,
    now: int,
) -> ScheduleRecord:
    """The schedule after a change of settings.

    A new spec fires from its first fire time at or after the earlier of now
    and the pending fire time (so a fire time that was due is not lost), and
    never again at a fire time already processed.
    """
    after = replace(
        before,
        description=description,
        spec=spec,
        policies=policies,
        template=template,
        revision=before.revision + 1,
        updated_at=now,
    )
    if spec == before.spec:
        return after
    pending = before.next_fire_at
    base = now if pending is None else min(pending, now)
    return replace(
        after, next_fire_at=first_fire(spec, base=base, fired_through=before.fired_through)
    )


def same_settings(a: ScheduleRecord, b: ScheduleRecord) -> bool:
    return (a.description, a.spec, a.policies, a.template) == (
        b.description,
        b.spec,
        b.policies,
        b.template,
    )


class ScheduleState(IntEnum):
    """Values equal the protobuf ScheduleState numbers."""

    ACTIVE = 1
    PAUSED = 2
    COMPLETED = 3


@dataclass(frozen=True, slots=True)
class FireRecord:
    """One row of a schedule's fire history."""

    schedule_id: str
    fire_time: int
    manual: bool
    result: FireResult
    recorded_at: int
    task_id: str | None = None
    count: int = 1
    last_missed_at: int | None = None
    message: str | None = None
    task_state: int | None = None  # the task's TaskState value, when it still exists
    run_at: int | None = None  # when the submitted task was due: fire time + jitter
