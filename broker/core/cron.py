"""Calendar arithmetic for schedules: instants, time zones, wall clocks and cron expressions.

Instants are integer microseconds since the epoch (UTC), like everywhere in the
broker. A calendar trigger (a cron expression here, a recurrence rule in
`broker.core.rrule`) matches *wall-clock* times in a zone; the mapping from
wall-clock times to instants (daylight saving gaps and repeats) is ours and
shared by both (`next_instant`), because croniter fires a repeated 02:30
twice and snaps a skipped one to the transition (see `_instants`). Pure
functions: no clock, no policy (what a fire time becomes is
`broker.core.schedules`'s business).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from broker.errors import InvalidArgument

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# Daylight-saving shifts are at most this large anywhere (Lord Howe's is 30 min,
# the usual 1 h; 2 h historically). Only used to find transitions nearby.
_PROBE = timedelta(hours=3)
_MAX_ITER = 200_000

# The reason of every refused schedule spec, a bad cron or zone included.
REASON = "INVALID_SCHEDULE_SPEC"


def to_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // _US


def load_zone(name: str, where: str = "spec.time_zone") -> tzinfo:
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"{where} {name!r} is not an IANA time zone such as Europe/Berlin or UTC",
            reason=REASON,
        ) from None


# --- Wall clocks ----------------------------------------------------------------------------


class WallCalendar(Protocol):
    """The wall-clock times a trigger matches, free of any zone (cron and RRULE both are)."""

    @property
    def follows_elapsed(self) -> bool:
        """True when a repeated local hour fires in both occurrences (`0 * * * *`)."""
        ...

    def walls(self, after: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock times strictly after `after`, in order (maybe finite)."""
        ...


# --- Cron -----------------------------------------------------------------------------------

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NAMES5 = ("minute", "hour", "day-of-month", "month", "day-of-week")
_NAMES6 = ("second", *_NAMES5)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: 5 fields, or 6 with the seconds first."""

    fields: tuple[str, ...]

    @property
    def follows_elapsed(self) -> bool:
        """`0 * * * *` follows elapsed time across a repeated hour; `30 2 * * *` does not."""
        return self.fields[-4].startswith("*")

    def walls(self, after: datetime) -> Iterator[datetime]:
        it = croniter(self.for_croniter, after)
        while True:
            try:
                wall: datetime = it.get_next(datetime)
            except CroniterBadDateError:
                return
            yield wall

    @property
    def for_croniter(self) -> str:
        # croniter reads a sixth field as seconds *last*.
        fields = self.fields[1:] + self.fields[:1] if len(self.fields) == 6 else self.fields
        return " ".join(fields)


def parse_cron(expression: str, where: str = "spec.cron.expression") -> Cron:
    """Parse and check an expression; INVALID_ARGUMENT names the bad cron field."""
    text = expression.strip()
    text = _MACROS.get(text.lower(), text)
    fields = tuple(text.split())
    if len(fields) not in (5, 6):
        raise InvalidArgument(
            f"{where} {expression!r} has {len(fields)} fields; give 5 (minute hour "
            "day-of-month month day-of-week), 6 with a leading seconds field, or a macro "
            "such as @daily",
            reason=REASON,
        )
    names = _NAMES6 if len(fields) == 6 else _NAMES5
    for index, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = value
        if not croniter.is_valid(Cron(tuple(probe)).for_croniter):
            raise InvalidArgument(
                f"{where} {expression!r}: the {names[index]} field {value!r} is not valid",
                reason=REASON,
            )
    cron = Cron(fields)
    if not croniter.is_valid(cron.for_croniter):
        raise InvalidArgument(f"{where} {expression!r} is not a valid expression", reason=REASON)
    return cron


@functools.lru_cache(maxsize=512)
def parsed_cron(expression: str) -> Cron:
    """`parse_cron` of an expression already checked (a stored spec's), cached."""
    return parse_cron(expression)


def _local(us: int, zone: tzinfo) -> datetime:
    return to_dt(us).astimezone(zone)


def _offset(us: int, zone: tzinfo) -> timedelta:
    offset = _local(us, zone).utcoffset()
    assert offset is not None
    return offset


def _instants(wall: datetime, zone: tzinfo, both: bool) -> list[int]:
    """The instants at which a wall-clock time fires.

    PEP 495: for a time in a gap, fold=0 applies the offset from before the
    transition, which extrapolates forward (02:30 → 03:30); for a repeated
    time fold=0 is the first occurrence and fold=1 the second.
    """
    first = to_us(wall.replace(tzinfo=zone, fold=0))
    second = to_us(wall.replace(tzinfo=zone, fold=1))
    if first < second:  # repeated
        return [first, second] if both else [first]
    return [first]  # normal, or a gap (extrapolated forward)


def _naive(us: int, offset: timedelta) -> datetime:
    """The wall-clock time of an instant under a given UTC offset."""
    return (to_dt(us) + offset).replace(tzinfo=None)


def _transition(
    zone: tzinfo, after: int, direction: int
) -> tuple[int, timedelta, timedelta] | None:
    """A transition within its own size ahead of (+1) or behind (-1) `after`.

    Returns (instant, offset before, offset after) for a clock that goes back
    ahead of `after`, or forward behind it: the two cases in which wall-clock
    order and instant order disagree near `after`.
    """
    here = _offset(after, zone)
    # Either way the offset at `after` is the larger one.
    shift = here - _offset(after + direction * (_PROBE // _US), zone)
    if shift <= timedelta(0):
        return None
    reach = after + direction * (shift // _US)
    if _offset(reach, zone) == here:
        return None
    lo, hi = sorted((after, reach))
    while hi - lo > 1:  # the first instant with the later offset
        mid = (lo + hi) // 2
        if _offset(mid, zone) == _offset(lo, zone):
            lo = mid
        else:
            hi = mid
    return hi, _offset(lo, zone), _offset(hi, zone)


def _first_match(calendar: WallCalendar, start: datetime) -> datetime | None:
    return next(iter(calendar.walls(start)), None)


def _forward(calendar: WallCalendar, zone: tzinfo, after: int) -> int | None:
    """Walk wall-clock times after `after`'s own, mapping each to its instants.

    Instants come out of order in two places, and the walk goes on past the
    first find to catch them: after a gap time extrapolated forward (a later
    wall time may map earlier), and after a second occurrence of a repeated
    time (a later wall time's first occurrence may come earlier).
    """
    it = iter(calendar.walls(_local(after, zone).replace(tzinfo=None)))
    best: int | None = None
    bound: datetime | None = None
    for _ in range(_MAX_ITER):
        wall = next(it, None)
        if wall is None:
            break
        if bound is not None and wall > bound:
            break
        for instant in _instants(wall, zone, calendar.follows_elapsed):
            if instant > after and (best is None or instant < best):
                best = instant
                bound = _local(best, zone).replace(tzinfo=None)
                first = wall.replace(tzinfo=zone, fold=0)
                if to_us(first) < best:  # a second occurrence
                    offset = first.utcoffset()
                    assert offset is not None
                    bound = _naive(best, offset)
                    skip = _naive(after, offset)
                    if skip > wall:  # earlier first occurrences are all past
                        it = iter(calendar.walls(skip))
    return best


def next_instant(calendar: WallCalendar, zone: tzinfo, after: int) -> int | None:
    """The first instant strictly after `after` at which the calendar fires in `zone`."""
    best = _forward(calendar, zone, after)
    back = _transition(zone, after, +1)
    if back is not None and calendar.follows_elapsed and (best is None or best > back[0]):
        # Clocks go back soon: wall times up to now's repeat after the transition.
        at, _, later = back
        wall = _first_match(calendar, _naive(at - 1, later))
        if wall is not None:
            instant = to_us(wall.replace(tzinfo=zone, fold=1))
            if instant > after and (best is None or instant < best):
                best = instant
    gap = _transition(zone, after, -1)
    if gap is not None:
        # Clocks just went forward: skipped wall times fire late, extrapolated.
        at, earlier, later = gap
        wall = _first_match(calendar, _naive(after, earlier))
        if wall is not None and wall < _naive(at, later):
            instant = to_us(wall.replace(tzinfo=zone, fold=0))
            if instant > after and (best is None or instant < best):
                best = instant
    return best
