"""RFC 5545 recurrence rules as a schedule trigger: the parts we accept, and bounded expansion.

python-dateutil expands a rule on naive wall-clock times; `broker.core.cron`
maps those to instants in the schedule's zone, exactly as for cron. What this
module adds around dateutil is what a broker that evaluates user rules on
every tick needs:

* **A closed list of rule parts**, each value range-checked, so that a bad
  rule is refused with a message naming the part rather than misread.
* **An anchor** (RFC 5545's DTSTART): the schedule's `start_time` read on the
  wall clock, else 1970-01-01 00:00:00 local. What a rule leaves out comes
  from the anchor (time of day, weekday, day of month), as dateutil does; we
  write those defaults into the rule once, so that the anchor can then be
  moved forward by whole periods of the rule (`_aligned`) without changing
  what it matches. A search therefore starts next to the instant asked about
  instead of iterating every period since 1970.
* **Bounded cost.** dateutil walks period by period until it finds a match or
  passes year 9999, so a rule that never matches again would cost seconds
  per call. The Gregorian calendar repeats every 400 years (146,097 days,
  exactly 20,871 weeks), so a search is translated by a multiple of 400
  years to start between 9200 and 9600: dateutil's own stop at 9999 then
  bounds every search to at most 800 years ahead, and at least 400 (the
  horizon). Rules that match no day at all are refused by a cheap yearly
  probe before any fine-grained search runs.

Nothing here reads a clock. BYEASTER, RDATE, EXDATE and DTSTART lines are not
accepted (exclusions are the schedule's own, see `broker.core.schedules`).
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from dateutil import rrule as du

from broker.core.cron import REASON, load_zone, to_dt, to_us
from broker.errors import InvalidArgument

MAX_COUNT = 1000
MAX_INTERVAL = 1000
MAX_YEARLY_INTERVAL = 100
HORIZON_YEARS = 400
_CYCLE = 400  # years after which dates and weekdays repeat exactly
_BAND = 9200  # searches start in [_BAND, _BAND + _CYCLE); dateutil stops after 9999
EPOCH_WALL = datetime(1970, 1, 1)  # noqa: DTZ001 - a wall-clock time, naive on purpose

_FREQS = {
    "YEARLY": du.YEARLY,
    "MONTHLY": du.MONTHLY,
    "WEEKLY": du.WEEKLY,
    "DAILY": du.DAILY,
    "HOURLY": du.HOURLY,
    "MINUTELY": du.MINUTELY,
    "SECONDLY": du.SECONDLY,
}
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Integer list parts: (smallest, largest, negative values allowed).
_NUMBERS = {
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", *_NUMBERS, "BYDAY", "WKST")
_DAY_FILTERS = ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")
_BYDAY = re.compile(r"^([+-]?)(\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
_DAY_PARTS = ("BYMONTH", *_DAY_FILTERS)
# The time-of-day parts that filter a sub-daily rule's own steps.
_LATTICE = {
    du.HOURLY: ("BYHOUR",),
    du.MINUTELY: ("BYHOUR", "BYMINUTE"),
    du.SECONDLY: ("BYHOUR", "BYMINUTE", "BYSECOND"),
}
_STEP = {
    du.DAILY: timedelta(days=1),
    du.HOURLY: timedelta(hours=1),
    du.MINUTELY: timedelta(minutes=1),
    du.SECONDLY: timedelta(seconds=1),
}


def _refuse(message: str) -> InvalidArgument:
    return InvalidArgument(f"spec.recurrence.rule: {message}", reason=REASON)


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """A checked rule: a `WallCalendar` for `broker.core.cron.next_instant`."""

    text: str
    freq: int
    interval: int
    anchor: datetime  # naive, wall clock
    wkst: int  # the weekday weeks start on (0 = Monday)
    count: int | None
    until_us: int | None  # UNTIL as an instant (inclusive), or None
    template: du.rrule  # defaults written out; dtstart is the anchor
    follows_elapsed: bool

    def walls(self, after: datetime) -> Iterator[datetime]:
        if self.count is not None:
            yield from _after(_expanded(self), after)
            return
        after = max(after, self.anchor - timedelta(microseconds=1))
        start = _aligned(self, after)
        shift = _shift(after.year)
        rule = self.template.replace(dtstart=_move(start, shift))
        try:
            for wall in rule.xafter(_move(after, shift)):
                yield _move(wall, -shift)
        except (ValueError, OverflowError):
            return  # an interval that can reach no valid time from here (checked on create)


def _move(wall: datetime, years: int) -> datetime:
    return wall.replace(year=wall.year + years)


def _shift(year: int) -> int:
    """Whole 400-year cycles that bring `year` into [_BAND, _BAND + _CYCLE)."""
    return _CYCLE * -((year - _BAND) // _CYCLE)


def _aligned(rule: Rule, after: datetime) -> datetime:
    """The start of the rule's period containing `after`, counted in INTERVALs from the anchor.

    Defaults are explicit in the template, so a period start matches exactly
    what the anchor would have from there on.
    """
    a, n = rule.anchor, rule.interval
    if rule.freq == du.YEARLY:
        return datetime(a.year + (after.year - a.year) // n * n, 1, 1)  # noqa: DTZ001
    if rule.freq == du.MONTHLY:
        months = (after.year - a.year) * 12 + after.month - a.month
        index = a.year * 12 + a.month - 1 + months // n * n
        return datetime(index // 12, index % 12 + 1, 1)  # noqa: DTZ001
    if rule.freq == du.WEEKLY:
        week = datetime.combine(a.date(), time()) - timedelta(days=(a.weekday() - rule.wkst) % 7)
        return week + timedelta(weeks=(after - week).days // 7 // n * n)
    step = _STEP[rule.freq]
    floor = a.replace(microsecond=0)
    if rule.freq == du.DAILY:
        floor = datetime.combine(a.date(), time())
    elif rule.freq == du.HOURLY:
        floor = floor.replace(minute=0, second=0)
    elif rule.freq == du.MINUTELY:
        floor = floor.replace(second=0)
    return floor + step * ((after - floor) // step // n * n)


def _after(walls: tuple[datetime, ...], after: datetime) -> Iterator[datetime]:
    yield from walls[bisect.bisect_right(walls, after) :]


@functools.lru_cache(maxsize=256)
def _expanded(rule: Rule) -> tuple[datetime, ...]:
    """Every occurrence of a COUNT rule (at most MAX_COUNT, within the horizon of its anchor)."""
    shift = _shift(rule.anchor.year)
    moved = rule.template.replace(dtstart=_move(rule.anchor, shift), count=rule.count)
    try:
        return tuple(_move(wall, -shift) for wall in moved)
    except (ValueError, OverflowError):
        return ()


# --- Parsing --------------------------------------------------------------------------------


def _parts(text: str) -> dict[str, str]:
    body = text.strip()
    if body[:6].upper() == "RRULE:":
        body = body[6:]
    if not body or any(c in body for c in "\r\n"):
        raise _refuse(
            "give one RRULE value such as FREQ=WEEKLY;BYDAY=MO;BYHOUR=9 (no DTSTART, RDATE "
            "or EXDATE lines: start_time anchors the rule, exclusions skip dates)"
        )
    parts: dict[str, str] = {}
    for item in body.split(";"):
        key, sep, value = item.partition("=")
        key = key.strip().upper()
        if not sep or not value.strip():
            raise _refuse(f"{item!r} is not NAME=VALUE")
        if key not in _PARTS:
            raise _refuse(f"the part {key!r} is not supported; use {', '.join(_PARTS)}")
        if key in parts:
            raise _refuse(f"the part {key} is given twice")
        parts[key] = value.strip().upper()
    if "FREQ" not in parts:
        raise _refuse("FREQ is required, e.g. FREQ=DAILY")
    if parts["FREQ"] not in _FREQS:
        raise _refuse(f"FREQ={parts['FREQ']} is not one of {', '.join(_FREQS)}")
    return parts


def _integer(key: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _refuse(f"{key}={value} is not a whole number") from None
    if not low <= number <= high:
        raise _refuse(f"{key} must be from {low} to {high}, got {number}")
    return number


def _check_values(parts: dict[str, str]) -> None:
    for key, (low, high, negative) in _NUMBERS.items():
        for value in parts[key].split(",") if key in parts else ():
            number = _integer(key, value, -high if negative else low, high)
            if negative and number == 0:
                raise _refuse(f"{key} values must be from {low} to {high} or their negatives")
    for value in parts["BYDAY"].split(",") if "BYDAY" in parts else ():
        found = _BYDAY.match(value)
        if found is None or (found.group(2) is not None and not 1 <= int(found.group(2)) <= 53):
            raise _refuse(f"BYDAY value {value!r} is not a weekday such as MO, 2TU or -1FR")
    if "WKST" in parts and parts["WKST"] not in _DAYS:
        raise _refuse(f"WKST={parts['WKST']} is not one of {', '.join(_DAYS)}")
    if "BYSETPOS" in parts and parts["FREQ"] not in ("YEARLY", "MONTHLY", "WEEKLY"):
        raise _refuse("BYSETPOS is accepted with FREQ YEARLY, MONTHLY or WEEKLY only")


def _check_drift(parts: dict[str, str], freq: int, interval: int) -> None:
    """Refuse sub-daily steps that drift across days while filtering both day and time.

    A step that divides a day puts the same times on every day, so the day
    filters and the time filters can be searched apart; one that does not
    (every 7 minutes) shifts from day to day, and dateutil finds out that no
    shifted time ever lands on a wanted day only by walking centuries.
    """
    if freq < du.HOURLY:
        return
    if timedelta(days=1) % (_STEP[freq] * interval):
        timely = [k for k in _LATTICE[freq] if k in parts]
        daily = [k for k in _DAY_PARTS if k in parts]
        if timely and daily:
            raise _refuse(
                f"INTERVAL={interval} does not divide a day, so it cannot be combined with "
                f"both {'/'.join(daily)} and {'/'.join(timely)}; use an INTERVAL that divides "
                "a day, or drop one of them"
            )


def _until(value: str, zone: tzinfo) -> int:
    found = _UNTIL.match(value)
    if found is None:
        raise _refuse(f"UNTIL={value} is not a date (20271231) or date-time (20271231T170000Z)")
    day, clock, utc = found.groups()
    try:
        when = datetime.strptime(day + (clock or "235959"), "%Y%m%d%H%M%S")  # noqa: DTZ007
    except ValueError:
        raise _refuse(f"UNTIL={value} is not a valid date") from None
    if utc:
        return to_us(when.replace(tzinfo=UTC))
    return to_us(when.replace(tzinfo=zone, fold=1)) + (999_999 if clock is None else 0)


def _with_defaults(parts: dict[str, str], anchor: datetime) -> str:
    """The rule for dateutil: no COUNT or UNTIL, and every default taken from the anchor."""
    out = {k: v for k, v in parts.items() if k not in ("COUNT", "UNTIL")}
    freq = _FREQS[parts["FREQ"]]
    for key, level, value in (
        ("BYHOUR", du.HOURLY, anchor.hour),
        ("BYMINUTE", du.MINUTELY, anchor.minute),
        ("BYSECOND", du.SECONDLY, anchor.second),
    ):
        if freq < level and key not in out:
            out[key] = str(value)
    if not any(k in out for k in _DAY_FILTERS):
        if freq == du.YEARLY:
            out.setdefault("BYMONTH", str(anchor.month))
            out["BYMONTHDAY"] = str(anchor.day)
        elif freq == du.MONTHLY:
            out["BYMONTHDAY"] = str(anchor.day)
        elif freq == du.WEEKLY:
            out["BYDAY"] = _DAYS[anchor.weekday()]
    return ";".join(f"{k}={v}" for k, v in out.items())


def _probe_days(parts: dict[str, str], body: str) -> None:
    """For DAILY and finer rules: some day within the horizon passes the day filters.

    Below WEEKLY a rule's day filters act on each day alone (BYDAY ordinals
    are ignored at these frequencies), so a yearly rule with the same filters
    finds such a day in a few hundred cheap steps, where the rule itself would
    walk every day up to year 9999 before giving up.
    """
    if _FREQS[parts["FREQ"]] < du.DAILY or not any(k in parts for k in _DAY_FILTERS):
        return
    keep = ("BYMONTH", *_DAY_FILTERS, "WKST")
    probe = {k: v for k, v in parts.items() if k in keep}
    if "BYDAY" in probe:
        probe["BYDAY"] = ",".join(d[-2:] for d in probe["BYDAY"].split(","))
    text = ";".join(["FREQ=YEARLY", *(f"{k}={v}" for k, v in probe.items())])
    try:
        rule = du.rrulestr(text + ";BYHOUR=0;BYMINUTE=0;BYSECOND=0", dtstart=datetime(_BAND, 1, 1))  # noqa: DTZ001
        day = next(iter(rule), None)
    except ValueError as error:
        raise _refuse(f"{error}") from None
    if day is None:
        raise _refuse(f"no day passes {body!r}'s day filters (e.g. 30 February)")


def parse_rule(text: str, *, anchor: datetime | None, zone: tzinfo) -> Rule:
    """Check a rule and make it ready to expand; INVALID_ARGUMENT names what is wrong.

    `anchor` is the schedule's start_time on the wall clock of `zone`, or
    None for the default (1970-01-01 00:00:00 local).
    """
    parts = _parts(text)
    _check_values(parts)
    freq = _FREQS[parts["FREQ"]]
    high = MAX_YEARLY_INTERVAL if freq == du.YEARLY else MAX_INTERVAL
    interval = _integer("INTERVAL", parts.get("INTERVAL", "1"), 1, high)
    _check_drift(parts, freq, interval)
    count = _integer("COUNT", parts["COUNT"], 1, MAX_COUNT) if "COUNT" in parts else None
    if count is not None and anchor is None:
        raise _refuse("COUNT counts from the anchor: set spec.start_time too")
    if count is not None and "UNTIL" in parts:
        raise _refuse("give COUNT or UNTIL, not both (RFC 5545)")
    until_us = _until(parts["UNTIL"], zone) if "UNTIL" in parts else None
    start = (anchor or EPOCH_WALL).replace(microsecond=0)
    body = _with_defaults(parts, start)
    _probe_days(parts, text)
    try:
        template = du.rrulestr(body, dtstart=start)
    except ValueError as error:
        raise _refuse(f"{error}") from None
    if not isinstance(template, du.rrule):
        raise _refuse("give a single rule")
    rule = Rule(
        text=text,
        freq=freq,
        interval=interval,
        anchor=start,
        wkst=_DAYS.index(parts.get("WKST", "MO")),
        count=count,
        until_us=until_us,
        template=template,
        follows_elapsed=freq >= du.HOURLY and "BYHOUR" not in parts,
    )
    try:
        first = next(iter(template.replace(dtstart=_move(start, _shift(start.year)))), None)
    except ValueError as error:  # e.g. an INTERVAL that can never reach the BYMINUTE given
        raise _refuse(f"{error}") from None
    if first is None:
        raise _refuse(f"{body!r} matches no time within {HORIZON_YEARS} years of its anchor")
    return rule


@functools.lru_cache(maxsize=512)
def parsed_rule(text: str, anchor_us: int | None, time_zone: str) -> Rule:
    """`parse_rule` of a stored spec's rule (already checked), cached."""
    zone = load_zone(time_zone)
    anchor = None if anchor_us is None else to_dt(anchor_us).astimezone(zone).replace(tzinfo=None)
    return parse_rule(text, anchor=anchor, zone=zone)
