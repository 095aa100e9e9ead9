"""Schedule logic with an injected `now`: cron and DST, catch-up, overlap, a year of firing."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broker.core.cron import DAY, HOUR, MINUTE, SECOND, parse_cron, to_dt, to_us
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
    jitter_offset,
    plan_fires,
    resume_fire,
)
from broker.errors import InvalidArgument

T0 = to_us(datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))


def cron(expression: str, zone: str = "") -> Spec:
    return Spec(TriggerKind.CRON, cron=expression, time_zone=zone)


def every(us: int, start: int | None = None) -> Spec:
    return Spec(TriggerKind.INTERVAL, every_us=us, start_at=start)


def local(when: str, zone: str) -> int:
    return to_us(datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)))


def walls(times: list[int], zone: str) -> list[str]:
    return [to_dt(t).astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in times]


def fires_between(spec: Spec, start: int, end: int) -> list[int]:
    out: list[int] = []
    at = spec.next_after(start)
    while at is not None and at <= end:
        out.append(at)
        at = spec.next_after(at)
    return out


# --- Cron expressions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2026-01-01T00:07", ["00:15", "00:30", "00:45"]),
        ("0 9-11 * * *", "2026-01-01T08:00", ["09:00", "10:00", "11:00"]),
        ("0 0 * * mon-fri", "2026-01-02T12:00", ["01-05", "01-06", "01-07"]),  # Fri → Mon
        ("0 0 1 jan,jul *", "2026-01-02T00:00", ["07-01", "01-01"]),
        ("@hourly", "2026-01-01T00:30", ["01:00", "02:00", "03:00"]),
        ("@daily", "2026-01-01T00:30", ["01-02", "01-03", "01-04"]),
        ("@weekly", "2026-01-01T00:00", ["01-04", "01-11", "01-18"]),  # Sundays
        ("@monthly", "2026-01-15T00:00", ["02-01", "03-01", "04-01"]),
        ("@yearly", "2026-01-15T00:00", ["2027", "2028", "2029"]),
        ("30 */20 * * * *", "2026-01-01T00:00", ["00:00:30", "00:20:30", "00:40:30"]),  # seconds
    ],
)
def test_cron_fields_lists_ranges_steps_names_macros_and_seconds(
    expression: str, after: str, expected: list[str]
) -> None:
    start = local(after, "UTC")
    got = [to_dt(t).isoformat() for t in cron(expression).upcoming(start, len(expected))]
    assert all(part in text for part, text in zip(expected, got, strict=True)), got


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("61 * * * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 32 * *", "day-of-month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * funday", "day-of-week"),
        ("99 0 0 * * *", "second"),
    ],
)
def test_an_invalid_cron_field_is_invalid_argument_naming_the_field(
    expression: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_cron(expression)
    assert caught.value.reason == "INVALID_SCHEDULE_SPEC"
    assert f"the {field} field" in caught.value.message


@pytest.mark.parametrize(
    "bad",
    [
        cron("* * *"),  # too few fields
        cron("0 0 30 2 *"),  # February 30th never comes
        cron("0 0 * * *", "Mars/Olympus_Mons"),
        every(SECOND // 2),
        Spec(TriggerKind.ONCE),
        Spec(TriggerKind.INTERVAL, every_us=HOUR, start_at=T0, end_at=T0 - 1),
        Spec(TriggerKind.INTERVAL, every_us=HOUR, jitter_us=2 * HOUR),
    ],
)
def test_specs_that_cannot_fire_are_refused(bad: Spec) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_spec(bad, now=T0)
    assert caught.value.reason == "INVALID_SCHEDULE_SPEC"


# --- Daylight saving time -------------------------------------------------------------------


def test_daily_0230_in_berlin_fires_once_on_both_transition_days() -> None:
    spec = cron("30 2 * * *", "Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist: it
    # fires when it would have been, at 03:30 CEST (01:30Z).
    spring = fires_between(
        spec, local("2026-03-28T12:00", "Europe/Berlin"), local("2026-03-30T12:00", "Europe/Berlin")
    )
    assert walls(spring, "Europe/Berlin") == ["03-29 03:30+0200", "03-30 02:30+0200"]
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice:
    # it fires at the first only.
    autumn = fires_between(
        spec, local("2026-10-24T12:00", "Europe/Berlin"), local("2026-10-26T12:00", "Europe/Berlin")
    )
    assert walls(autumn, "Europe/Berlin") == ["10-25 02:30+0200", "10-26 02:30+0100"]


def test_new_york_skipped_and_repeated_times_fire_once() -> None:
    daily_0230 = cron("30 2 * * *", "America/New_York")
    spring = fires_between(
        daily_0230,
        local("2026-03-07T12:00", "America/New_York"),
        local("2026-03-09T12:00", "America/New_York"),
    )
    assert walls(spring, "America/New_York") == ["03-08 03:30-0400", "03-09 02:30-0400"]
    daily_0130 = cron("30 1 * * *", "America/New_York")  # 01:00-02:00 repeats on Nov 1
    autumn = fires_between(
        daily_0130,
        local("2026-10-31T12:00", "America/New_York"),
        local("2026-11-02T12:00", "America/New_York"),
    )
    assert walls(autumn, "America/New_York") == ["11-01 01:30-0400", "11-02 01:30-0500"]


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Berlin", "2026-03-29", "2026-10-25"),
        ("America/New_York", "2026-03-08", "2026-11-01"),
    ],
)
def test_an_hourly_cron_follows_elapsed_time_across_transitions(
    zone: str, spring: str, autumn: str
) -> None:
    spec = cron("0 * * * *", zone)
    for day, hours in ((spring, 23), (autumn, 25)):
        start = local(f"{day}T00:00", zone) - 1
        end = local(f"{day}T23:59", zone)
        got = fires_between(spec, start, end)
        assert len(got) == hours
        assert all(b - a == HOUR for a, b in itertools.pairwise(got))


# --- Intervals, one-shots, start and end ----------------------------------------------------


def test_intervals_are_anchored_to_start_time_or_the_epoch() -> None:
    assert every(15 * MINUTE).next_after(T0 + 7 * MINUTE) == T0 + 15 * MINUTE
    anchored = every(HOUR, start=T0 + 10 * MINUTE)
    assert anchored.upcoming(T0, 3) == [T0 + 10 * MINUTE, T0 + 70 * MINUTE, T0 + 130 * MINUTE]


def test_end_time_is_inclusive_and_then_the_spec_runs_out() -> None:
    spec = Spec(TriggerKind.INTERVAL, every_us=HOUR, start_at=T0, end_at=T0 + 2 * HOUR)
    assert spec.upcoming(T0 - 1, 10) == [T0, T0 + HOUR, T0 + 2 * HOUR]


def test_a_one_shot_in_the_past_still_fires_once_but_never_twice() -> None:
    spec = Spec(TriggerKind.ONCE, once_at=T0)
    assert first_fire(spec, base=T0 + HOUR, fired_through=None) == T0
    assert first_fire(spec, base=T0 + HOUR, fired_through=T0) is None
    assert resume_fire(spec, now=T0 + HOUR, fired_through=None) is None  # passed while paused


def test_jitter_is_below_the_bound_and_stable_per_fire_time() -> None:
    offsets = {jitter_offset("s1", T0 + i * HOUR, 30 * SECOND) for i in range(200)}
    assert all(0 <= o < 30 * SECOND for o in offsets) and len(offsets) > 150
    assert jitter_offset("s1", T0, 30 * SECOND) == jitter_offset("s1", T0, 30 * SECOND)


# --- A year of firing -----------------------------------------------------------------------


def run_ticker(spec: Spec, policies: Policies, start: int, end: int, step: int) -> list[FirePlan]:
    """Call plan_fires as a ticker would, every `step`, carrying the state along."""
    state = FireState(first_fire(spec, base=start, fired_through=None))
    plans = []
    for now in range(start, end + 1, step):
        plan = plan_fires(spec, policies, state, now)
        plans.append(plan)
        state = FireState(plan.next_fire_at, plan.buffered_at, running=False)
    return plans


def test_a_year_of_an_hourly_cron_fires_every_hour_exactly_once() -> None:
    spec = cron("0 * * * *", "Europe/Berlin")
    year = 365 * DAY
    # The ticker looks every 7 minutes, so fires are a little late but within grace.
    plans = run_ticker(spec, Policies(overlap=Overlap.ALLOW_ALL), T0, T0 + year, 7 * MINUTE)
    started = [f.fire_time for p in plans for f in p.fires if f.result is FireResult.STARTED]
    assert len(started) == len(set(started)) == 365 * 24  # 8,760: DST shifts change no count
    assert started == sorted(started)
    assert all(b - a == HOUR for a, b in itertools.pairwise(started))
    assert not [f for p in plans for f in p.fires if f.result is not FireResult.STARTED]


# --- Catch-up after downtime ----------------------------------------------------------------

# An hourly interval from 10:00; the broker comes back at 15:30 with a 1-minute
# grace: 10:00 … 15:00 (6 fire times) were missed, the next is 16:00.
DOWN = FireState(next_fire_at=10 * HOUR)
BACK = 15 * HOUR + 30 * MINUTE


def results(plan: FirePlan) -> list[tuple[str, int, int]]:
    return [(f.result.name, f.fire_time // HOUR, f.count) for f in plan.fires]


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        (Catchup.SKIP, [("MISSED", 10, 6)]),
        (Catchup.ONE, [("MISSED", 10, 5), ("STARTED", 15, 1)]),
        (
            Catchup.ALL,
            [("MISSED", 10, 3), ("STARTED", 13, 1), ("STARTED", 14, 1), ("STARTED", 15, 1)],
        ),
    ],
)
def test_missed_fire_times_follow_the_catchup_policy(
    catchup: Catchup, expected: list[tuple[str, int, int]]
) -> None:
    policies = Policies(catchup=catchup, catchup_limit=3, overlap=Overlap.ALLOW_ALL)
    plan = plan_fires(every(HOUR), policies, DOWN, BACK)
    assert results(plan) == expected
    assert plan.next_fire_at == 16 * HOUR
    assert plan.count(FireResult.MISSED) + plan.count(FireResult.STARTED) == 6


def test_a_late_fire_within_grace_is_on_time_and_one_covers_the_missed() -> None:
    policies = Policies(misfire_grace_us=2 * HOUR, catchup=Catchup.ONE)
    plan = plan_fires(every(HOUR), policies, DOWN, BACK)  # 14:00 and 15:00 are within grace
    assert results(plan) == [("MISSED", 10, 4), ("STARTED", 14, 1), ("SKIPPED", 15, 1)]


def test_a_long_outage_is_worked_off_in_bounded_plans() -> None:
    spec, policies = every(SECOND), Policies(catchup=Catchup.SKIP)
    state, now, plans = FireState(next_fire_at=0), 3 * DAY, 0
    counted = {result: 0 for result in FireResult}
    while state.next_fire_at is not None and state.next_fire_at <= now:
        plan = plan_fires(spec, policies, state, now, budget=5000)
        plans += 1
        for result in FireResult:
            counted[result] += plan.count(result)
        state = FireState(plan.next_fire_at, running=False)
    # Every second from 0 through now is accounted for: the last minute (the
    # grace) is on time — one run, the rest skipped as overlapping it — and
    # the 259,140 seconds before are missed, in plans of at most 5,000.
    assert counted[FireResult.MISSED] == 3 * DAY // SECOND - 60
    assert counted[FireResult.STARTED] == 1 and counted[FireResult.SKIPPED] == 60
    assert plans == 3 * DAY // SECOND // 5000 + 1


# --- Overlap --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        (Overlap.SKIP, ["SKIPPED", "SKIPPED"]),
        (Overlap.BUFFER_ONE, ["BUFFERED", "SKIPPED"]),
        (Overlap.ALLOW_ALL, ["STARTED", "STARTED"]),
    ],
)
def test_fires_while_the_previous_run_is_unfinished_follow_the_overlap_policy(
    overlap: Overlap, expected: list[str]
) -> None:
    policies = Policies(overlap=overlap)
    running = FireState(next_fire_at=HOUR, running=True)
    first = plan_fires(every(HOUR), policies, running, HOUR)
    second = plan_fires(
        every(HOUR), policies, FireState(2 * HOUR, first.buffered_at, running=True), 2 * HOUR
    )
    assert [f.result.name for f in (*first.fires, *second.fires)] == expected


def test_a_buffered_fire_starts_once_the_previous_run_finishes() -> None:
    plan = plan_fires(every(HOUR), Policies(), FireState(5 * HOUR, HOUR, running=False), HOUR + 5)
    assert results(plan) == [("STARTED", 1, 1)]
    assert plan.buffered_at is None and plan.next_fire_at == 5 * HOUR
