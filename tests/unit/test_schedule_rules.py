"""Recurrence rules, exclusions and max_instances with an injected `now`: a year at a time."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr

from broker.core.cron import DAY, HOUR, MINUTE, SECOND, to_dt, to_us
from broker.core.rrule import parse_rule
from broker.core.schedules import (
    Catchup,
    FirePlan,
    FireResult,
    FireState,
    Overlap,
    Policies,
    Spec,
    TriggerKind,
    check_spec,
    first_fire,
    plan_fires,
    policies_from_json,
    policies_to_json,
    spec_from_json,
    spec_to_json,
)
from broker.errors import InvalidArgument

ZONES = ("Europe/Berlin", "America/New_York")
YEAR_START = {zone: to_us(datetime(2026, 1, 1, tzinfo=ZoneInfo(zone))) for zone in ZONES}


def rule(text: str, zone: str = "", **fields: object) -> Spec:
    return Spec(TriggerKind.RRULE, rrule=text, time_zone=zone, **fields)  # type: ignore[arg-type]


def local(when: str, zone: str) -> int:
    return to_us(datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)))


def walls(times: list[int], zone: str, fmt: str = "%m-%d %H:%M%z") -> list[str]:
    return [to_dt(t).astimezone(ZoneInfo(zone)).strftime(fmt) for t in times]


def run_ticker(spec: Spec, policies: Policies, start: int, end: int, step: int) -> list[FirePlan]:
    """Call plan_fires as a ticker would, every `step`, carrying the state along."""
    state = FireState(first_fire(spec, base=start, fired_through=None))
    plans = []
    for now in range(start, end + 1, step):
        plan = plan_fires(spec, policies, state, now)
        plans.append(plan)
        state = FireState(plan.next_fire_at, plan.buffered_at, running=0)
    return plans


def started(plans: list[FirePlan]) -> list[int]:
    return [f.fire_time for p in plans for f in p.fires if f.result is FireResult.STARTED]


# --- A year of recurrence rules across DST, in two zones ------------------------------------


@pytest.mark.parametrize("zone", ZONES)
def test_a_year_of_every_second_tuesday_at_0930_keeps_the_local_time_across_dst(
    zone: str,
) -> None:
    # Anchored on Tuesday 2026-01-06: that week and every second one after it.
    spec = rule(
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;BYHOUR=9;BYMINUTE=30",
        zone,
        start_at=local("2026-01-06T00:00", zone),
    )
    start = YEAR_START[zone]
    plans = run_ticker(spec, Policies(overlap=Overlap.ALLOW_ALL), start, start + 365 * DAY, HOUR)
    fired = started(plans)
    assert len(fired) == len(set(fired)) == 26  # 2026-01-06 … 2026-12-22
    assert set(walls(fired, zone, "%a %H:%M")) == {"Tue 09:30"}
    days = [to_dt(t).astimezone(ZoneInfo(zone)).date() for t in fired]
    assert days[0] == date(2026, 1, 6) and days[-1] == date(2026, 12, 22)
    assert all(b - a == timedelta(days=14) for a, b in itertools.pairwise(days))
    # The wall clock stays at 09:30 while the UTC offset changes twice.
    assert len(set(walls(fired, zone, "%z"))) == 2
    assert not [f for p in plans for f in p.fires if f.result is not FireResult.STARTED]


@pytest.mark.parametrize("zone", ZONES)
def test_a_year_of_an_hourly_rule_follows_elapsed_time_across_dst(zone: str) -> None:
    spec = rule("FREQ=HOURLY", zone)  # no BYHOUR: like cron's `0 * * * *`
    start = YEAR_START[zone]
    plans = run_ticker(
        spec, Policies(overlap=Overlap.ALLOW_ALL), start, start + 365 * DAY, 7 * MINUTE
    )
    fired = started(plans)
    assert len(fired) == len(set(fired)) == 365 * 24  # 23 hours in spring, 25 in autumn
    assert all(b - a == HOUR for a, b in itertools.pairwise(fired))


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        # Berlin: 02:00 → 03:00 on 03-29, 03:00 → 02:00 on 10-25.
        (
            "Europe/Berlin",
            ["03-29 03:30+0200", "03-30 02:30+0200"],
            ["10-25 02:30+0200", "10-26 02:30+0100"],
        ),
        # New York: 02:00 → 03:00 on 03-08, 02:00 → 01:00 on 11-01 (02:30 is not repeated).
        (
            "America/New_York",
            ["03-08 03:30-0400", "03-09 02:30-0400"],
            ["11-01 02:30-0500", "11-02 02:30-0500"],
        ),
    ],
)
def test_a_daily_rule_at_0230_fires_once_on_both_transition_days(
    zone: str, spring: list[str], autumn: list[str]
) -> None:
    spec = rule("FREQ=DAILY;BYHOUR=2;BYMINUTE=30", zone)
    for first_day, expected in ((spring[0][:5], spring), (autumn[0][:5], autumn)):
        day = local(f"2026-{first_day}T00:00", zone) - 12 * HOUR
        assert walls(spec.upcoming(day, 2), zone) == expected


def test_last_friday_of_the_month_at_1700_for_a_year() -> None:
    zone = "Europe/Berlin"
    spec = rule("FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17;BYMINUTE=0", zone)
    got = walls(spec.upcoming(YEAR_START[zone], 12), zone, "%m-%d %a %H:%M")
    assert got == [
        "01-30 Fri 17:00", "02-27 Fri 17:00", "03-27 Fri 17:00", "04-24 Fri 17:00",
        "05-29 Fri 17:00", "06-26 Fri 17:00", "07-31 Fri 17:00", "08-28 Fri 17:00",
        "09-25 Fri 17:00", "10-30 Fri 17:00", "11-27 Fri 17:00", "12-25 Fri 17:00",
    ]  # fmt: skip


COARSE = [
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=18",  # last workday
    "FREQ=YEARLY;INTERVAL=3;BYWEEKNO=20;BYDAY=MO",
    "FREQ=DAILY;INTERVAL=3",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=WEEKLY",
    "FREQ=MONTHLY;INTERVAL=5",
]
FINE = [  # dateutil alone walks every step from the anchor: anchor these recently
    "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15",
    "FREQ=MINUTELY;INTERVAL=7",
    "FREQ=SECONDLY;INTERVAL=13;BYMONTHDAY=13;BYDAY=FR",
]
RECENT = datetime(2025, 11, 3, 8, 3, 11)  # noqa: DTZ001 - a wall-clock time


@pytest.mark.parametrize(
    ("text", "anchor"),
    [(t, a) for t in COARSE for a in (None, RECENT)] + [(t, RECENT) for t in FINE],
)
def test_searching_from_a_moved_anchor_finds_what_dateutil_finds_from_the_real_one(
    text: str, anchor: datetime | None
) -> None:
    # Searches start near the time asked about and in a year band near 9999; the
    # occurrences must be exactly dateutil's own from the anchor (within the horizon).
    ours = parse_rule(text, anchor=anchor, zone=UTC)
    theirs = rrulestr(text, dtstart=anchor or datetime(1970, 1, 1))  # noqa: DTZ001
    for after in (datetime(2026, 3, 1, 12, 34, 56), datetime(2026, 12, 31, 23, 59, 59)):  # noqa: DTZ001
        expected = list(itertools.islice(theirs.xafter(after), 12))
        assert list(itertools.islice(ours.walls(after), 12)) == expected


def test_count_and_until_bound_a_rule() -> None:
    zone = "Europe/Berlin"
    start = local("2026-03-01T00:00", zone)
    counted = rule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=8;COUNT=3", zone, start_at=start)
    assert walls(counted.upcoming(start - 1, 10), zone) == [
        "03-02 08:00+0100", "03-09 08:00+0100", "03-16 08:00+0100",
    ]  # fmt: skip
    # UNTIL as a date includes that whole local day.
    until = rule("FREQ=DAILY;BYHOUR=23;UNTIL=20260303", zone, start_at=start)
    assert walls(until.upcoming(start - 1, 10), zone, "%m-%d %H:%M") == [
        "03-01 23:00", "03-02 23:00", "03-03 23:00",
    ]  # fmt: skip
    assert until.end == local("2026-03-03T23:59:59.999999", zone)


# --- Refused rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "give one RRULE value"),
        ("DTSTART:20260101T000000\nRRULE:FREQ=DAILY", "no DTSTART"),
        ("BYHOUR=9", "FREQ is required"),
        ("FREQ=FORTNIGHTLY", "is not one of YEARLY"),
        ("FREQ=DAILY;BYEASTER=0", "the part 'BYEASTER' is not supported"),
        ("FREQ=DAILY;BYHOUR=24", "BYHOUR must be from 0 to 23"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY values must be from 1 to 31"),
        ("FREQ=MONTHLY;BYDAY=-1XX", "is not a weekday"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be from 1 to 1000"),
        ("FREQ=YEARLY;INTERVAL=500", "INTERVAL must be from 1 to 100"),
        ("FREQ=DAILY;COUNT=5", "set spec.start_time"),
        ("FREQ=DAILY;BYHOUR=1;BYHOUR=2", "given twice"),
        ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL=TOMORROW is not a date"),
        ("FREQ=DAILY;BYSETPOS=1;BYHOUR=1,2", "BYSETPOS is accepted with FREQ YEARLY"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "matches no time within 400 years"),
        ("FREQ=SECONDLY;BYMONTH=4;BYMONTHDAY=31", "no day passes"),  # refused cheaply
        ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", "matches no time"),  # 1970-01-01 was a Thursday
        ("FREQ=HOURLY;INTERVAL=2;BYHOUR=1", "empty"),  # even hours only
        ("FREQ=MINUTELY;INTERVAL=7;BYHOUR=3;BYDAY=MO", "does not divide a day"),
    ],
)
def test_bad_or_unboundedly_costly_rules_are_refused_naming_the_problem(
    text: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_spec(rule(text), now=YEAR_START["Europe/Berlin"])
    assert caught.value.reason == "INVALID_SCHEDULE_SPEC"
    assert fragment in caught.value.message


# --- Exclusions -------------------------------------------------------------------------------

HOLIDAYS = (
    ("2026-12-24", "2026-12-26"),
    ("2026-12-31", "2026-12-31"),
    ("2026-12-25", "2027-01-01"),
)


@pytest.mark.parametrize(
    "spec",
    [
        Spec(TriggerKind.CRON, cron="0 9 * * *", time_zone="Europe/Berlin", exclusions=HOLIDAYS),
        rule("FREQ=DAILY;BYHOUR=9", "Europe/Berlin", exclusions=HOLIDAYS),
    ],
)
def test_excluded_dates_are_not_fire_times_for_any_calendar_trigger(spec: Spec) -> None:
    # Overlapping ranges merge: 12-24 … 01-01 is one stretch without fires.
    after = local("2026-12-22T00:00", "Europe/Berlin")
    assert walls(spec.upcoming(after, 4), "Europe/Berlin", "%Y-%m-%d %H:%M") == [
        "2026-12-22 09:00", "2026-12-23 09:00", "2027-01-02 09:00", "2027-01-03 09:00",
    ]  # fmt: skip


def test_exclusions_are_read_in_the_schedules_zone_for_intervals_too() -> None:
    # Every 6 hours (UTC); 2026-05-01 in Tokyo is 04-30 15:00Z … 05-01 15:00Z.
    spec = Spec(
        TriggerKind.INTERVAL,
        every_us=6 * HOUR,
        time_zone="Asia/Tokyo",
        exclusions=(("2026-05-01", "2026-05-01"),),
    )
    after = to_us(datetime(2026, 4, 30, 5, tzinfo=UTC))
    assert walls(spec.upcoming(after, 3), "UTC", "%m-%d %H:%M") == [
        "04-30 06:00", "04-30 12:00", "05-01 18:00",
    ]  # fmt: skip


def test_excluded_fire_times_are_neither_run_nor_missed() -> None:
    # A daily 09:00 UTC job, the broker down through a week of which 3 days are excluded.
    spec = Spec(TriggerKind.CRON, cron="0 9 * * *", exclusions=(("2026-01-03", "2026-01-05"),))
    t0 = to_us(datetime(2026, 1, 1, tzinfo=UTC))
    plan = plan_fires(spec, Policies(catchup=Catchup.SKIP), FireState(t0 + 9 * HOUR), t0 + 7 * DAY)
    assert plan.count(FireResult.MISSED) == 7 - 3  # 01-01, 01-02, 01-06, 01-07
    assert plan.next_fire_at == t0 + 7 * DAY + 9 * HOUR


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (Spec(TriggerKind.ONCE, once_at=to_us(datetime(2026, 12, 25, 12, tzinfo=UTC)),
              exclusions=(("2026-12-25", "2026-12-25"),)), "falls on an excluded date"),
        (Spec(TriggerKind.CRON, cron="0 0 25 12 *", exclusions=(("2026-01-01", "9999-12-31"),)),
         "never matches a date that is not excluded"),
        (Spec(TriggerKind.CRON, cron="@daily", exclusions=(("2026-12-25", "2026-12-24"),)),
         "end_date is before its start_date"),
        (Spec(TriggerKind.CRON, cron="@daily", exclusions=(("25.12.2026", "25.12.2026"),)),
         "is not a date such as 2026-12-24"),
        (Spec(TriggerKind.CRON, cron="@daily", exclusions=(("2026-12-25", "2026-12-25"),) * 1001),
         "the limit is 1000"),
    ],
)  # fmt: skip
def test_bad_exclusions_are_refused(spec: Spec, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_spec(spec, now=to_us(datetime(2026, 1, 1, tzinfo=UTC)))
    assert caught.value.reason == "INVALID_SCHEDULE_SPEC"
    assert fragment in caught.value.message


def test_a_spec_excluded_to_the_end_of_time_runs_out() -> None:
    spec = Spec(
        TriggerKind.INTERVAL,
        every_us=HOUR,
        end_at=None,
        exclusions=(("2026-01-02", "9999-12-31"),),
    )
    t0 = to_us(datetime(2026, 1, 1, 22, tzinfo=UTC))
    assert spec.upcoming(t0, 5) == [t0 + HOUR]


def test_rules_and_exclusions_survive_the_stored_json() -> None:
    spec = rule("FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin", exclusions=HOLIDAYS, jitter_us=SECOND)
    assert spec_from_json(spec_to_json(spec)) == spec
    policies = Policies(max_instances=3)
    assert policies_from_json(policies_to_json(policies)) == policies
    # Policies stored before max_instances existed read as 1.
    assert policies_from_json(policies_to_json(Policies()).replace(',"max_instances":1', ""))


# --- max_instances ----------------------------------------------------------------------------


def results(plan: FirePlan) -> list[tuple[str, int]]:
    return [(f.result.name, f.fire_time // HOUR) for f in plan.fires]


def every_hour() -> Spec:
    return Spec(TriggerKind.INTERVAL, every_us=HOUR)


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        # Two runs unfinished, a cap of 3: one more starts, then the cap holds.
        (Overlap.SKIP, [("STARTED", 1), ("SKIPPED", 2), ("SKIPPED", 3)]),
        (Overlap.BUFFER_ONE, [("STARTED", 1), ("BUFFERED", 2), ("SKIPPED", 3)]),
    ],
)
def test_up_to_max_instances_runs_are_unfinished_at_once(
    overlap: Overlap, expected: list[tuple[str, int]]
) -> None:
    policies = Policies(overlap=overlap, max_instances=3, misfire_grace_us=3 * HOUR)
    plan = plan_fires(every_hour(), policies, FireState(HOUR, running=2), 3 * HOUR)
    assert results(plan) == expected
    skipped = [f for f in plan.fires if f.result is FireResult.SKIPPED]
    assert all(f.unfinished == 3 for f in skipped)


def test_a_buffered_fire_starts_as_soon_as_a_run_below_the_cap_finishes() -> None:
    policies = Policies(overlap=Overlap.BUFFER_ONE, max_instances=2)
    full = plan_fires(every_hour(), policies, FireState(9 * HOUR, 2 * HOUR, running=2), HOUR)
    assert full.fires == () and full.buffered_at == 2 * HOUR
    freed = plan_fires(every_hour(), policies, FireState(9 * HOUR, 2 * HOUR, running=1), HOUR)
    assert results(freed) == [("STARTED", 2)] and freed.buffered_at is None


def test_catching_up_all_starts_no_more_than_max_instances() -> None:
    policies = Policies(catchup=Catchup.ALL, catchup_limit=10, max_instances=3)
    plan = plan_fires(every_hour(), policies, FireState(10 * HOUR), 15 * HOUR + 30 * MINUTE)
    assert [r for r, _ in results(plan)] == ["STARTED"] * 3 + ["SKIPPED"] * 3


@pytest.mark.parametrize(
    ("policies", "fragment"),
    [
        (Policies(max_instances=0), "max_instances must be from 1 to 1000"),
        (Policies(max_instances=1001), "max_instances must be from 1 to 1000"),
        (Policies(max_instances=2, overlap=Overlap.ALLOW_ALL), "allow_all has no cap"),
    ],
)
def test_max_instances_out_of_range_or_without_a_cap_to_hold_is_refused(
    policies: Policies, fragment: str
) -> None:
    assert any(fragment in p for p in policies.problems())
    assert not Policies(max_instances=1, overlap=Overlap.ALLOW_ALL).problems()


def test_a_year_of_a_rule_with_max_instances_and_runs_that_take_two_periods() -> None:
    # Every hour; each run takes 2 h 30 min (simulated), at most 2 at once: fires
    # alternate between started and skipped in a fixed pattern, never above the cap.
    spec = rule("FREQ=HOURLY", "America/New_York")
    policies = Policies(max_instances=2)
    start = YEAR_START["America/New_York"]
    state = FireState(first_fire(spec, base=start, fired_through=None))
    ends: list[int] = []
    counted = {FireResult.STARTED: 0, FireResult.SKIPPED: 0}
    for now in range(start, start + 365 * DAY, 10 * MINUTE):
        ends = [e for e in ends if e > now]
        plan = plan_fires(spec, policies, replace_running(state, len(ends)), now)
        for fire in plan.fires:
            counted[fire.result] += 1
            if fire.result is FireResult.STARTED:
                ends.append(fire.fire_time + 2 * HOUR + 30 * MINUTE)
        assert len(ends) <= 2
        state = FireState(plan.next_fire_at, plan.buffered_at)
    assert counted[FireResult.STARTED] + counted[FireResult.SKIPPED] == 365 * 24
    # Out of every 3 hourly fires, 2 start and 1 is skipped (runs end at :30).
    assert counted[FireResult.STARTED] == 2 * 365 * 24 // 3


def replace_running(state: FireState, running: int) -> FireState:
    return FireState(state.next_fire_at, state.buffered_at, running=running)
