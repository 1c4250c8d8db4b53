"""Bounded schedule work (issue 11): every next fire and preview costs a bounded number of steps,
whatever the rule, DTSTART, COUNT, `after` (years 1-9999), zone or jitter; rules too costly to
compute are refused; the calendar's ends give short answers, never errors.

Costs are asserted as steps counted by the engine (`Work.spent`), never as wall time. The walk
that replaced dateutil's iterator is checked against dateutil itself on random rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chalicelib.domain import schedules
from chalicelib.domain.schedules import (
    WORK_BUDGET,
    ScheduleBudgetError,
    ScheduleError,
    Work,
    describe,
    next_fire,
    parse_schedule,
    preview,
)
from chalicelib.domain.timefmt import iso

NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
EVERY_DAY = "MO,TU,WE,TH,FR,SA,SU"
DENSE_YEARLY = (
    f"FREQ=YEARLY;BYDAY={EVERY_DAY};BYHOUR={','.join(map(str, range(24)))};BYMINUTE={','.join(map(str, range(60)))}"
)
FEB_29 = "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=10000"


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse(kind: str, expr: str | None, zone: str = "UTC", **kwargs: object) -> schedules.Schedule:
    schedules.clear_caches()  # every test pays the cold cost (masks, zone transitions)
    return parse_schedule(kind, expr, zone, now=NOW, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the cases


def test_leap_day_rule_with_a_large_count_previews_within_budget() -> None:
    # GIVEN Feb 29 with COUNT=10000: 40,000 years of leap days, more than the calendar holds
    schedule = parse("rrule", FEB_29)
    # WHEN previewing 100 fires
    work = Work()
    fires = preview(schedule, NOW, 100, work=work)
    # THEN they are the next 100 leap days, found in a bounded number of steps
    assert fires[0] == z("2028-02-29T06:00:00Z") and fires[1] == z("2032-02-29T06:00:00Z")
    assert all(f.month == 2 and f.day == 29 for f in fires) and len(fires) == 100
    assert work.spent < WORK_BUDGET


def test_a_preview_that_runs_out_of_calendar_returns_the_fires_that_exist() -> None:
    schedule = parse("rrule", FEB_29)
    fires = preview(schedule, z("9990-01-01T00:00:00Z"), 100)
    assert fires == [z("9992-02-29T06:00:00Z"), z("9996-02-29T06:00:00Z")]


def test_count_still_ends_the_rule() -> None:
    schedule = parse("rrule", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=3")
    assert preview(schedule, NOW, 10) == [z(f"{y}-02-29T06:00:00Z") for y in (2028, 2032, 2036)]


def test_dense_yearly_rule_previewed_after_year_8000_is_cheap() -> None:
    # GIVEN a yearly rule with every BYDAY, BYHOUR and BYMINUTE (527,040 candidates a year)
    schedule = parse("rrule", DENSE_YEARLY)
    # WHEN previewing 100 fires after year 8000
    work = Work()
    fires = preview(schedule, z("8000-01-01T00:00:00Z"), 100, work=work)
    # THEN they are the next 100 minutes, computed in a few thousand steps, not 6,000 years of them
    assert fires == [z("8000-01-01T00:00:00Z") + timedelta(minutes=m) for m in range(1, 101)]
    assert work.spent < 20_000


def test_dense_yearly_rule_from_1990_compiles_and_fires_next_minute() -> None:
    # GIVEN the same rule starting in 1990 (what POST /tasks compiles)
    schedule = parse("rrule", f"DTSTART:19900101T000000Z\nRRULE:{DENSE_YEARLY}")
    # WHEN asking for the next fire now
    work = Work()
    fire = next_fire(schedule, NOW, work=work)
    # THEN it is the next minute, and finding it did not walk the 36 years since DTSTART
    assert fire == NOW + timedelta(minutes=1)
    assert work.spent < 5_000


@pytest.mark.parametrize(
    ("expr", "zone", "after"),
    [
        ("*/5 * * * *", "UTC", "9999-12-31T23:59:00Z"),
        ("*/5 * * * *", "America/New_York", "9999-12-31T23:59:00Z"),
        ("30 2 * * *", "America/New_York", "9999-12-30T12:00:00Z"),
        ("0 0 1 1 *", "Pacific/Kiritimati", "9999-06-01T00:00:00Z"),
    ],
)
def test_cron_preview_at_the_end_of_the_calendar_is_empty_not_an_error(expr: str, zone: str, after: str) -> None:
    assert preview(parse("cron", expr, zone), z(after), 10) == []


def test_preview_after_an_instant_past_year_9999_in_utc_is_empty() -> None:
    after = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))  # year 10000 in UTC
    assert preview(parse("cron", "*/5 * * * *"), after, 10) == []


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "UTC", "Pacific/Kiritimati"])
@pytest.mark.parametrize("expr", ["*/5 * * * *", "30 2 * * *"])
def test_preview_from_year_1_starts_on_the_calendars_second_day(zone: str, expr: str) -> None:
    fires = preview(parse("cron", expr, zone), z("0001-01-01T00:00:00Z"), 5)
    assert len(fires) == 5 and all(f.year == 1 for f in fires)
    assert fires[0] >= z("0001-01-02T00:00:00Z") and fires == sorted(set(fires))
    assert iso(fires[0]).startswith("0001-01-0")  # RFC 3339: four-digit year


def test_starts_at_in_year_1_is_a_valid_bound() -> None:
    schedule = parse("cron", "30 2 * * *", "America/New_York", starts_at=z("0001-01-01T00:00:00Z"), jitter_seconds=60)
    assert next_fire(schedule, NOW) is not None
    assert "not before 0001-01-01T00:00:00Z" in describe(schedule)


@pytest.mark.parametrize("name", ["starts_at", "ends_at"])
def test_a_bound_past_year_9999_in_utc_names_the_field(name: str) -> None:
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))
    with pytest.raises(ScheduleError) as caught:
        parse("cron", "30 2 * * *", **{name: late})
    assert caught.value.field == name and "9999-12-31T23:59:59Z" in caught.value.message


def test_jitter_and_bounds_at_the_end_of_the_calendar() -> None:
    schedule = parse("cron", "59 23 * * *", jitter_seconds=3600, jitter_seed="t", ends_at=z("9999-12-31T23:59:59Z"))
    fires = preview(schedule, z("9999-12-28T00:00:00Z"), 10)
    assert fires and all(f <= z("9999-12-30T23:59:59Z") for f in fires)


def test_iso_writes_four_digit_years() -> None:
    assert iso(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert iso(datetime(999, 5, 6, 7, 8, 9, 999, tzinfo=UTC)) == "0999-05-06T07:08:09Z"
    assert iso(datetime(2027, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))) == "2027-01-01T00:00:00Z"


# --------------------------------------------------------------------------- the budget


def test_the_budget_stops_a_computation_and_names_schedule_expr() -> None:
    schedule = parse("rrule", "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO")
    with pytest.raises(ScheduleBudgetError) as caught:
        next_fire(schedule, z("2050-03-01T00:00:00Z"), work=Work(limit=1_000))  # next: 2072
    assert caught.value.field == "schedule_expr" and "steps" in caught.value.message
    assert isinstance(caught.value, ScheduleError)  # the API's 400 mapping applies


def test_a_sparse_elapsed_time_rule_in_a_dst_zone_stays_in_budget() -> None:
    # Every minute of a Feb 29 that is a Monday: up to 40 years apart, 80 DST changes between.
    schedule = parse("rrule", "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", "America/New_York")
    work = Work()
    fires = preview(schedule, z("9000-03-01T00:00:00Z"), 3, work=work)
    assert [f.date() for f in fires] == [fires[0].date()] * 3 and fires[0].month == 2
    assert work.spent < 3 * WORK_BUDGET


def test_a_rule_that_never_fires_is_refused_and_the_refusal_remembered() -> None:
    never = "FREQ=MINUTELY;INTERVAL=1440;BYHOUR=5\nDTSTART:20270101T030000Z"
    with pytest.raises(ScheduleError) as caught:
        parse("rrule", never)
    assert caught.value.field == "schedule_expr" and "never" in caught.value.message
    # a second request for the same rule gets the same answer without compiling it again
    assert schedules._REFUSED and schedules._parse_cached.cache_info().misses == 1
    with pytest.raises(ScheduleError) as again:
        parse_schedule("rrule", never, "UTC", now=NOW)
    assert again.value.message == caught.value.message
    assert schedules._parse_cached.cache_info().misses == 1


# --------------------------------------------------------------------------- same answers as dateutil

FREQS = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY"]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


def _lists(values: list[str], most: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=most, unique=True).map(",".join)


@st.composite
def rules(draw: st.DrawFn) -> str:
    freq = draw(st.sampled_from(FREQS))
    parts = [f"FREQ={freq}"]
    if draw(st.booleans()):
        top = {"MINUTELY": 200, "HOURLY": 50}.get(freq, 5)
        parts.append(f"INTERVAL={draw(st.integers(1, top))}")
    if draw(st.integers(0, 3)) == 0:
        parts.append(f"BYMONTH={draw(_lists([str(m) for m in range(1, 13)], 4))}")
    if draw(st.integers(0, 3)) == 0:
        parts.append(f"BYMONTHDAY={draw(_lists([str(d) for d in [*range(1, 32), *range(-3, 0)]], 4))}")
    if draw(st.integers(0, 2)) == 0:
        if freq in ("YEARLY", "MONTHLY") and draw(st.booleans()):
            days = [f"{n}{d}" for n in (1, 2, -1, 3) for d in DAYS]
        else:
            days = DAYS
        parts.append(f"BYDAY={draw(_lists(days, 4))}")
    if freq == "YEARLY" and draw(st.integers(0, 4)) == 0:
        parts.append(f"BYWEEKNO={draw(_lists([str(w) for w in (1, 2, 10, 26, 52, 53, -1)], 3))}")
    if freq in ("YEARLY", "DAILY") and draw(st.integers(0, 5)) == 0:
        parts.append(f"BYYEARDAY={draw(_lists([str(d) for d in (1, 32, 60, 100, 200, 365, 366, -1)], 3))}")
    if draw(st.booleans()):
        parts.append(f"BYHOUR={draw(_lists([str(h) for h in range(24)], 5))}")
    if draw(st.booleans()):
        parts.append(f"BYMINUTE={draw(_lists([str(m) for m in range(0, 60, 5)], 4))}")
    if draw(st.integers(0, 3)) == 0:
        parts.append(f"BYSETPOS={draw(_lists(['1', '2', '3', '-1', '-2'], 2))}")
    if draw(st.integers(0, 4)) == 0:
        parts.append(f"WKST={draw(st.sampled_from(DAYS))}")
    return ";".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    rule=rules(),
    dtstart=st.datetimes(datetime(1995, 1, 1), datetime(2030, 12, 31)).map(lambda d: d.replace(microsecond=0)),
    ahead=st.integers(0, 3 * 366 * 24 * 60),
)
def test_the_walk_yields_what_dateutil_yields(rule: str, dtstart: datetime, ahead: int) -> None:
    # GIVEN a random rule our parser accepts
    stamp = dtstart.strftime("%Y%m%dT%H%M%S")
    try:
        schedule = parse_schedule("rrule", f"DTSTART:{stamp}\nRRULE:{rule}", "UTC", now=NOW)
    except ScheduleError:
        assume(False)
        return
    compiled = schedule.rule
    assert isinstance(compiled, schedules._RRule)
    start = dtstart + timedelta(minutes=ahead)
    # WHEN both list what follows `start` in the next 4 years (ours first: it is bounded)
    window = start + timedelta(days=4 * 366)
    ours = list(itertools.takewhile(lambda d: d <= window, itertools.islice(compiled.iter_from(start), 30)))
    assume(len(ours) > 0)
    theirs = list(itertools.islice(rrulestr(rule, dtstart=dtstart).xafter(start), len(ours)))
    # THEN the occurrences are the same
    assert ours == theirs


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;COUNT=150",  # 97 leap days a cycle: past the first one
        "FREQ=MONTHLY;BYDAY=1MO,-1FR;COUNT=9700",  # 9,600 a cycle
        "FREQ=DAILY;INTERVAL=7;BYMONTH=2;BYMONTHDAY=29;COUNT=40",  # a lattice: cycles of 2,800 years
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,FR;BYSETPOS=-1;COUNT=9999",  # no shortcut: walked
    ],
)
def test_count_beyond_one_400_year_cycle_ends_where_dateutil_ends(rule: str) -> None:
    # GIVEN a COUNT whose last date lies past the first 400-year cycle (found by shifting)
    dtstart = datetime(1900, 1, 3, 9, 30)
    schedule = parse_schedule("rrule", f"DTSTART:19000103T093000\nRRULE:{rule}", "UTC", now=NOW)
    compiled = schedule.rule
    assert isinstance(compiled, schedules._RRule)
    # THEN the last date is dateutil's
    *_, last = rrulestr(rule, dtstart=dtstart)
    assert compiled.until == last
    assert next_fire(schedule, last.replace(tzinfo=UTC) - timedelta(seconds=1)) == last.replace(tzinfo=UTC)
    assert next_fire(schedule, last.replace(tzinfo=UTC)) is None


@st.composite
def crons(draw: st.DrawFn) -> str:
    def field(lo: int, hi: int) -> str:
        kind = draw(st.integers(0, 4))
        if kind == 0:
            return "*"
        if kind == 1:
            return f"*/{draw(st.integers(2, max(2, (hi - lo) // 2)))}"
        if kind == 2:
            a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2, unique=True)))
            return f"{a}-{b}"
        return ",".join(
            str(v) for v in sorted(draw(st.lists(st.integers(lo, hi), min_size=1, max_size=3, unique=True)))
        )

    return " ".join((field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 7)))


@settings(max_examples=300, deadline=None)
@given(
    expr=crons(),
    start=st.datetimes(datetime(1990, 1, 1), datetime(2060, 12, 31)).map(lambda d: d.replace(microsecond=0)),
)
def test_cron_matches_are_cronsims(expr: str, start: datetime) -> None:
    from cronsim import CronSim, CronSimError

    try:
        schedule = parse_schedule("cron", expr, "UTC", now=NOW)
    except ScheduleError:
        with pytest.raises(CronSimError):
            CronSim(expr, start)
        return
    compiled = schedule.rule
    assert isinstance(compiled, schedules._CronRule)
    fresh = CronSim(expr, start)
    assert list(itertools.islice(compiled.iter_from(start), 15)) == [next(fresh) for _ in range(15)]


TRANSITIONS = {  # one 2027 offset change per zone: spring-forward, fall-back, 30-minute, at midnight
    "Europe/Chisinau": datetime(2027, 10, 31, 0, 0, tzinfo=UTC),
    "America/New_York": datetime(2027, 3, 14, 7, 0, tzinfo=UTC),
    "Australia/Lord_Howe": datetime(2027, 4, 3, 15, 0, tzinfo=UTC),
    "America/Santiago": datetime(2027, 9, 5, 4, 0, tzinfo=UTC),
}


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(sorted(TRANSITIONS)),
    minutes=st.lists(st.sampled_from([0, 15, 30, 45, 59]), min_size=1, max_size=2, unique=True),
    days_after=st.integers(0, 5),
    start_before=st.integers(0, 9 * 24 * 60),
)
def test_every_hour_schedules_match_a_minute_by_minute_search(
    zone: str, minutes: list[int], days_after: int, start_before: int
) -> None:
    """Elapsed-time (every-hour) schedules, far and near DST changes, against brute force: the
    first instant after `after` whose wall time matches (both copies of a repeated hour, none in
    a gap)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    change = TRANSITIONS[zone]
    day = (change + timedelta(days=days_after)).astimezone(tz)
    expr = f"{','.join(map(str, sorted(minutes)))} * {day.day} {day.month} *"
    schedule = parse("cron", expr, zone)
    after = change - timedelta(minutes=start_before)
    got = next_fire(schedule, after)
    moment = after.replace(second=0) + timedelta(minutes=1)
    while moment < change + timedelta(days=8):
        wall = moment.astimezone(tz)
        if wall.minute in minutes and wall.day == day.day and wall.month == day.month and moment > after:
            break
        moment += timedelta(minutes=1)
    assert got == moment


SOME_SCHEDULES = [
    ("cron", "*/5 * * * *"),
    ("cron", "30 2 * * *"),
    ("cron", "0 0 29 2 *"),
    ("rrule", FEB_29),
    ("rrule", DENSE_YEARLY),
    ("rrule", "FREQ=MINUTELY;INTERVAL=7;BYMONTH=2"),
    ("rrule", "DTSTART:89991231T235959Z\nRRULE:FREQ=WEEKLY;BYDAY=MO,FR;BYSETPOS=-1"),
    ("once", "2027-03-28T02:30:00"),
]


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(SOME_SCHEDULES),
    zone=st.sampled_from(["UTC", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Australia/Lord_Howe"]),
    jitter=st.sampled_from([0, 3599]),
    after=st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)),
    offset_minutes=st.integers(-24 * 60 + 1, 24 * 60 - 1),
    starts=st.sampled_from([None, "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"]),
)
def test_any_after_in_any_zone_gives_fires_or_none_never_an_error(
    which: tuple[str, str], zone: str, jitter: int, after: datetime, offset_minutes: int, starts: str | None
) -> None:
    kind, expr = which
    schedule = parse_schedule(
        kind,
        expr,
        zone,
        now=NOW,
        jitter_seconds=jitter,
        jitter_seed="t",
        starts_at=datetime.fromisoformat(starts) if starts else None,
        check_past=False,
    )
    moment = after.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    fires = preview(schedule, moment, 3)
    assert fires == sorted(set(fires)) and all(f.tzinfo is UTC for f in fires)
    assert all(datetime(1, 1, 2, tzinfo=UTC) <= f <= datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC) for f in fires)
    assert all(len(iso(f) or "") == 20 for f in fires)  # YYYY-MM-DDTHH:MM:SSZ, four-digit year
