"""DST policy of chalicelib.domain.schedules: hand-worked tables for 2027 plus properties.

Expected instants are worked out by hand from the zone rules (checked by test_table_premises),
never computed with the code under test. Offsets used below:
  Europe/Chisinau     EET +02 / EEST +03; 2027-03-28 02:00 -> 03:00 (00:00Z), 2027-10-31 03:00 -> 02:00 (00:00Z)
  America/New_York    EST -05 / EDT -04;  2027-03-14 02:00 -> 03:00 (07:00Z), 2027-11-07 02:00 -> 01:00 (06:00Z)
  Australia/Lord_Howe +10:30 / +11 (a 30-minute shift);
                      2027-04-04 02:00 -> 01:30 (15:00Z Apr 3), 2027-10-03 02:00 -> 02:30 (15:30Z Oct 2)
  Asia/Kolkata        +05:30, no DST
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.schedules import _compile_cron, fixed_hour, next_fire, parse_schedule, preview

NOW = datetime(2027, 1, 1, tzinfo=UTC)
ANCHOR = datetime(2027, 1, 1, tzinfo=UTC)
CHISINAU, NEW_YORK, LORD_HOWE, KOLKATA = "Europe/Chisinau", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"
DAILY_0230 = "FREQ=DAILY;BYHOUR=2;BYMINUTE=30"


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fires(kind: str, expr: str, zone: str, after: str, count: int) -> list[str]:
    schedule = parse_schedule(kind, expr, zone, now=NOW, anchor=ANCHOR)
    return [f.strftime("%Y-%m-%dT%H:%M:%SZ") for f in preview(schedule, z(after), count)]


@pytest.mark.parametrize(
    ("zone", "local", "fold", "offset_hours"),
    [
        (CHISINAU, "2027-03-28T01:59:59", 0, 2),
        (CHISINAU, "2027-03-28T03:00:00", 0, 3),
        (CHISINAU, "2027-10-31T02:30:00", 0, 3),
        (CHISINAU, "2027-10-31T02:30:00", 1, 2),
        (NEW_YORK, "2027-03-14T01:59:59", 0, -5),
        (NEW_YORK, "2027-03-14T03:00:00", 0, -4),
        (NEW_YORK, "2027-11-07T01:30:00", 0, -4),
        (NEW_YORK, "2027-11-07T01:30:00", 1, -5),
        (LORD_HOWE, "2027-04-04T01:45:00", 0, 11),
        (LORD_HOWE, "2027-04-04T01:45:00", 1, 10.5),
        (LORD_HOWE, "2027-10-03T01:59:59", 0, 10.5),
        (LORD_HOWE, "2027-10-03T02:30:00", 0, 11),
        (KOLKATA, "2027-03-28T02:30:00", 0, 5.5),
    ],
)
def test_table_premises(zone: str, local: str, fold: int, offset_hours: float) -> None:
    """The zone rules the hand-worked tables rely on (tzdata could change them)."""
    moment = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone), fold=fold)
    assert moment.utcoffset() == timedelta(hours=offset_hours)


# (kind, expr, zone, after, expected UTC fires). Comments give the local wall times.
DST_TABLE = [
    # ---- Europe/Chisinau, spring gap 02:00-03:00 on 2027-03-28
    ("cron", "30 2 * * *", CHISINAU, "2027-03-26T12:00:00Z",
     ["2027-03-27T00:30:00Z", "2027-03-28T00:00:00Z", "2027-03-28T23:30:00Z"]),  # 02:30 EET, gap -> 03:00 EEST, 02:30 EEST
    ("rrule", DAILY_0230, CHISINAU, "2027-03-26T12:00:00Z",
     ["2027-03-27T00:30:00Z", "2027-03-28T00:00:00Z", "2027-03-28T23:30:00Z"]),
    ("cron", "*/30 2 * * *", CHISINAU, "2027-03-27T12:00:00Z",
     ["2027-03-28T00:00:00Z", "2027-03-28T23:00:00Z", "2027-03-28T23:30:00Z"]),  # 02:00 and 02:30 both -> 03:00, once
    ("cron", "0 * * * *", CHISINAU, "2027-03-27T22:30:00Z",
     ["2027-03-27T23:00:00Z", "2027-03-28T00:00:00Z", "2027-03-28T01:00:00Z"]),  # 01:00 EET, 03:00 EEST, 04:00 EEST
    ("cron", "30 * * * *", CHISINAU, "2027-03-27T22:45:00Z",
     ["2027-03-27T23:30:00Z", "2027-03-28T00:30:00Z", "2027-03-28T01:30:00Z"]),  # 01:30, (02:30 absent), 03:30, 04:30
    ("cron", "*/15 * * * *", CHISINAU, "2027-03-27T23:40:00Z",
     ["2027-03-27T23:45:00Z", "2027-03-28T00:00:00Z", "2027-03-28T00:15:00Z"]),  # 01:45 EET, 03:00, 03:15 EEST
    # ---- Europe/Chisinau, fall: 02:00-03:00 repeated on 2027-10-31
    ("cron", "30 2 * * *", CHISINAU, "2027-10-29T12:00:00Z",
     ["2027-10-29T23:30:00Z", "2027-10-30T23:30:00Z", "2027-11-01T00:30:00Z"]),  # 02:30 EEST, first 02:30 EEST, 02:30 EET
    ("rrule", DAILY_0230, CHISINAU, "2027-10-29T12:00:00Z",
     ["2027-10-29T23:30:00Z", "2027-10-30T23:30:00Z", "2027-11-01T00:30:00Z"]),
    ("cron", "*/30 2 * * *", CHISINAU, "2027-10-30T12:00:00Z",
     ["2027-10-30T23:00:00Z", "2027-10-30T23:30:00Z", "2027-11-01T00:00:00Z"]),  # first copies only
    ("cron", "0 * * * *", CHISINAU, "2027-10-30T21:30:00Z",
     ["2027-10-30T22:00:00Z", "2027-10-30T23:00:00Z", "2027-10-31T00:00:00Z", "2027-10-31T01:00:00Z"]),
    ("cron", "30 * * * *", CHISINAU, "2027-10-30T22:45:00Z",
     ["2027-10-30T23:30:00Z", "2027-10-31T00:30:00Z", "2027-10-31T01:30:00Z"]),  # 02:30 EEST, 02:30 EET, 03:30 EET
    ("cron", "*/15 * * * *", CHISINAU, "2027-10-30T23:40:00Z",
     ["2027-10-30T23:45:00Z", "2027-10-31T00:00:00Z", "2027-10-31T00:15:00Z"]),  # 02:45 EEST, 02:00 EET, 02:15 EET
    ("rrule", "FREQ=HOURLY", CHISINAU, "2027-10-30T21:30:00Z",  # every hour: both copies of 02:00
     ["2027-10-30T22:00:00Z", "2027-10-30T23:00:00Z", "2027-10-31T00:00:00Z", "2027-10-31T01:00:00Z"]),
    # ---- America/New_York, spring gap 02:00-03:00 on 2027-03-14
    ("cron", "30 2 * * *", NEW_YORK, "2027-03-12T12:00:00Z",
     ["2027-03-13T07:30:00Z", "2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"]),  # 02:30 EST, gap -> 03:00 EDT, 02:30 EDT
    ("rrule", DAILY_0230, NEW_YORK, "2027-03-12T12:00:00Z",
     ["2027-03-13T07:30:00Z", "2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"]),
    ("cron", "0 * * * *", NEW_YORK, "2027-03-14T05:30:00Z",
     ["2027-03-14T06:00:00Z", "2027-03-14T07:00:00Z", "2027-03-14T08:00:00Z"]),  # 01:00 EST, 03:00 EDT, 04:00 EDT
    ("cron", "30 * * * *", NEW_YORK, "2027-03-14T05:45:00Z",
     ["2027-03-14T06:30:00Z", "2027-03-14T07:30:00Z", "2027-03-14T08:30:00Z"]),  # 01:30 EST, 03:30 EDT, 04:30 EDT
    ("cron", "*/15 * * * *", NEW_YORK, "2027-03-14T06:40:00Z",
     ["2027-03-14T06:45:00Z", "2027-03-14T07:00:00Z", "2027-03-14T07:15:00Z"]),
    # ---- America/New_York, fall: 01:00-02:00 repeated on 2027-11-07
    ("cron", "30 1 * * *", NEW_YORK, "2027-11-05T12:00:00Z",
     ["2027-11-06T05:30:00Z", "2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z"]),  # first 01:30 (EDT) only
    ("cron", "30 2 * * *", NEW_YORK, "2027-11-05T12:00:00Z",
     ["2027-11-06T06:30:00Z", "2027-11-07T07:30:00Z", "2027-11-08T07:30:00Z"]),  # 02:30 is not repeated
    ("rrule", DAILY_0230, NEW_YORK, "2027-11-05T12:00:00Z",
     ["2027-11-06T06:30:00Z", "2027-11-07T07:30:00Z", "2027-11-08T07:30:00Z"]),
    ("cron", "30 * * * *", NEW_YORK, "2027-11-07T05:00:00Z",
     ["2027-11-07T05:30:00Z", "2027-11-07T06:30:00Z", "2027-11-07T07:30:00Z"]),  # 01:30 EDT, 01:30 EST, 02:30 EST
    ("cron", "0 * * * *", NEW_YORK, "2027-11-07T04:30:00Z",
     ["2027-11-07T05:00:00Z", "2027-11-07T06:00:00Z", "2027-11-07T07:00:00Z"]),  # 01:00 EDT, 01:00 EST, 02:00 EST
    ("cron", "*/15 * * * *", NEW_YORK, "2027-11-07T05:40:00Z",
     ["2027-11-07T05:45:00Z", "2027-11-07T06:00:00Z", "2027-11-07T06:15:00Z"]),  # 01:45 EDT, 01:00 EST, 01:15 EST
    # ---- Australia/Lord_Howe, spring gap 02:00-02:30 on 2027-10-03 (30 minutes)
    ("cron", "15 2 * * *", LORD_HOWE, "2027-10-01T12:00:00Z",
     ["2027-10-01T15:45:00Z", "2027-10-02T15:30:00Z", "2027-10-03T15:15:00Z"]),  # 02:15 +10:30, gap -> 02:30 +11, 02:15 +11
    ("rrule", "FREQ=DAILY;BYHOUR=2;BYMINUTE=15", LORD_HOWE, "2027-10-01T12:00:00Z",
     ["2027-10-01T15:45:00Z", "2027-10-02T15:30:00Z", "2027-10-03T15:15:00Z"]),
    ("cron", "30 2 * * *", LORD_HOWE, "2027-10-01T12:00:00Z",
     ["2027-10-01T16:00:00Z", "2027-10-02T15:30:00Z", "2027-10-03T15:30:00Z"]),  # 02:30 exists on the gap day
    ("rrule", DAILY_0230, LORD_HOWE, "2027-10-01T12:00:00Z",
     ["2027-10-01T16:00:00Z", "2027-10-02T15:30:00Z", "2027-10-03T15:30:00Z"]),
    ("cron", "0 * * * *", LORD_HOWE, "2027-10-02T13:00:00Z",
     ["2027-10-02T13:30:00Z", "2027-10-02T14:30:00Z", "2027-10-02T16:00:00Z"]),  # 00:00, 01:00 +10:30, (02:00 absent), 03:00 +11
    ("cron", "*/15 * * * *", LORD_HOWE, "2027-10-02T15:10:00Z",
     ["2027-10-02T15:15:00Z", "2027-10-02T15:30:00Z", "2027-10-02T15:45:00Z"]),  # 01:45 +10:30, 02:30 +11, 02:45 +11
    ("rrule", "FREQ=MINUTELY;INTERVAL=15", LORD_HOWE, "2027-10-02T15:10:00Z",  # every 15 min: elapsed time
     ["2027-10-02T15:15:00Z", "2027-10-02T15:30:00Z", "2027-10-02T15:45:00Z"]),
    # ---- Australia/Lord_Howe, fall: 01:30-02:00 repeated on 2027-04-04
    ("cron", "45 1 * * *", LORD_HOWE, "2027-04-02T12:00:00Z",
     ["2027-04-02T14:45:00Z", "2027-04-03T14:45:00Z", "2027-04-04T15:15:00Z"]),  # first 01:45 (+11) only
    ("cron", "*/15 1 * * *", LORD_HOWE, "2027-04-03T14:10:00Z",
     ["2027-04-03T14:15:00Z", "2027-04-03T14:30:00Z", "2027-04-03T14:45:00Z", "2027-04-04T14:30:00Z"]),
    ("cron", "30 * * * *", LORD_HOWE, "2027-04-03T13:00:00Z",  # 00:30, 01:30 +11, 01:30 +10:30, 02:30 +10:30
     ["2027-04-03T13:30:00Z", "2027-04-03T14:30:00Z", "2027-04-03T15:00:00Z", "2027-04-03T16:00:00Z"]),
    ("cron", "*/15 * * * *", LORD_HOWE, "2027-04-03T14:40:00Z",  # 01:45 +11, 01:30, 01:45, 02:00 +10:30
     ["2027-04-03T14:45:00Z", "2027-04-03T15:00:00Z", "2027-04-03T15:15:00Z", "2027-04-03T15:30:00Z"]),
    ("rrule", "FREQ=MINUTELY;INTERVAL=15", LORD_HOWE, "2027-04-03T14:40:00Z",
     ["2027-04-03T14:45:00Z", "2027-04-03T15:00:00Z", "2027-04-03T15:15:00Z", "2027-04-03T15:30:00Z"]),
    # ---- Asia/Kolkata: no DST, +05:30
    ("cron", "30 2 * * *", KOLKATA, "2027-03-26T12:00:00Z",
     ["2027-03-26T21:00:00Z", "2027-03-27T21:00:00Z", "2027-03-28T21:00:00Z"]),
    ("rrule", DAILY_0230, KOLKATA, "2027-03-26T12:00:00Z",
     ["2027-03-26T21:00:00Z", "2027-03-27T21:00:00Z", "2027-03-28T21:00:00Z"]),
    ("cron", "0 * * * *", KOLKATA, "2027-03-27T20:00:00Z",
     ["2027-03-27T20:30:00Z", "2027-03-27T21:30:00Z", "2027-03-27T22:30:00Z"]),
    ("cron", "*/15 * * * *", KOLKATA, "2027-03-27T20:05:00Z",
     ["2027-03-27T20:15:00Z", "2027-03-27T20:30:00Z", "2027-03-27T20:45:00Z"]),
    # ---- UTC baseline
    ("cron", "30 2 * * *", "UTC", "2027-03-27T12:00:00Z",
     ["2027-03-28T02:30:00Z", "2027-03-29T02:30:00Z", "2027-03-30T02:30:00Z"]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "expr", "zone", "after", "expected"), DST_TABLE)
def test_dst_table(kind: str, expr: str, zone: str, after: str, expected: list[str]) -> None:
    assert fires(kind, expr, zone, after, len(expected)) == expected


def test_repeated_0230_fires_once_where_croniter_fires_twice() -> None:
    """croniter 7 fires `30 2 * * *` at both 02:30s of 2027-10-31 in Chisinau; the policy says once."""
    schedule = parse_schedule("cron", "30 2 * * *", CHISINAU, now=NOW)
    on_the_day = [
        f for f in preview(schedule, z("2027-10-30T12:00:00Z"), 5) if f.astimezone(ZoneInfo(CHISINAU)).day == 31
    ]
    assert on_the_day == [z("2027-10-30T23:30:00Z")]  # 02:30 +03:00, the first occurrence
    assert next_fire(schedule, z("2027-10-30T23:30:00Z")) == z("2027-11-01T00:30:00Z")


def test_after_inside_the_second_copy_of_a_repeated_hour() -> None:
    """Asking from the second 02:10 must not return the (earlier) first 02:30 again."""
    fixed = parse_schedule("cron", "30 2 * * *", CHISINAU, now=NOW)
    assert next_fire(fixed, z("2027-10-31T00:10:00Z")) == z("2027-11-01T00:30:00Z")
    hourly = parse_schedule("cron", "30 * * * *", CHISINAU, now=NOW)
    assert next_fire(hourly, z("2027-10-31T00:10:00Z")) == z("2027-10-31T00:30:00Z")


def test_fixed_hour_classification() -> None:
    def kind_of(kind: str, expr: str) -> bool:
        return fixed_hour(parse_schedule(kind, expr, CHISINAU, now=NOW, anchor=ANCHOR))

    assert kind_of("cron", "30 2 * * *") and kind_of("cron", "*/15 2 * * *") and kind_of("cron", "0 */2 * * *")
    assert not kind_of("cron", "*/15 * * * *") and not kind_of("cron", "0 0-23 * * *")
    assert kind_of("rrule", DAILY_0230) and kind_of("rrule", "FREQ=WEEKLY") and kind_of("rrule", "FREQ=HOURLY;BYHOUR=9")
    assert not kind_of("rrule", "FREQ=HOURLY") and not kind_of("rrule", "FREQ=MINUTELY;INTERVAL=15")
    assert kind_of("once", "2027-10-31T02:30:00")
    assert not kind_of("event", "order.*")


@pytest.mark.parametrize(
    "expr", ["30 2 * * *", "*/7 * * * *", "0 9 * * MON-FRI", "5,35 1-5 * 3 *", "0 0 29 2 *", "0 12 1,15 * 0"]
)
def test_cronsim_clone_matches_a_fresh_cronsim(expr: str) -> None:
    """The module clones a parsed CronSim instead of re-parsing; it must iterate identically."""
    from cronsim import CronSim

    start = datetime(2027, 3, 27, 22, 30, 15)
    clone = _compile_cron(expr).iter_from(start)
    fresh = CronSim(expr, start)
    assert [next(clone) for _ in range(20)] == [next(fresh) for _ in range(20)]


# --------------------------------------------------------------------------- properties

ZONE_TRANSITIONS = {  # 2027 offset changes (UTC); midnight ones for Santiago, 30-minute ones for Lord_Howe
    CHISINAU: ["2027-03-28T00:00:00Z", "2027-10-31T00:00:00Z"],
    NEW_YORK: ["2027-03-14T07:00:00Z", "2027-11-07T06:00:00Z"],
    LORD_HOWE: ["2027-04-03T15:00:00Z", "2027-10-02T15:30:00Z"],
    "America/Santiago": ["2027-04-04T03:00:00Z", "2027-09-05T04:00:00Z"],
    "Europe/London": ["2027-03-28T01:00:00Z", "2027-10-31T01:00:00Z"],
    KOLKATA: [],
    "UTC": [],
}
ZONES = list(ZONE_TRANSITIONS)
DST_ZONES = [zone for zone, changes in ZONE_TRANSITIONS.items() if changes]


@st.composite
def cases(draw: st.DrawFn, zones: list[str] = ZONES) -> tuple[str, str, set[int], set[int], datetime]:
    """(zone, cron, minute set, hour set, after), biased towards the zone's own DST transitions:
    `after` from 4 h before one to 1 h after it, and fixed hours drawn from the wall hours around it."""
    zone = draw(st.sampled_from(zones))
    tz = ZoneInfo(zone)
    changes = [z(t) for t in ZONE_TRANSITIONS[zone]]
    near = bool(changes) and draw(st.integers(0, 3)) > 0
    if near:
        change = draw(st.sampled_from(changes))
        after = change + timedelta(seconds=draw(st.integers(-4 * 3600, 3600)))
        first = (change - timedelta(minutes=90)).astimezone(tz).replace(tzinfo=None)
        last = (change + timedelta(minutes=90)).astimezone(tz).replace(tzinfo=None)
        span = max(first, last) - min(first, last)  # wall clock, so a gap's hours are included
        hour_pool = sorted({(min(first, last) + span * k / 8).hour for k in range(9)})
    else:
        after = draw(st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)))
        hour_pool = list(range(24))
    if draw(st.booleans()):
        step = draw(st.sampled_from([1, 5, 15, 20, 30]))
        minutes, minute_text = set(range(0, 60, step)), f"*/{step}"
    else:
        minutes = draw(st.sets(st.integers(0, 59), min_size=1, max_size=3))
        minute_text = ",".join(map(str, sorted(minutes)))
    if draw(st.booleans()):
        hours, hour_text = set(range(24)), "*"
    else:
        hours = draw(st.sets(st.sampled_from(hour_pool), min_size=1, max_size=3))
        hour_text = ",".join(map(str, sorted(hours)))
    return zone, f"{minute_text} {hour_text} * * *", minutes, hours, after


def oracle_next(minutes: set[int], hours: set[int], tz: ZoneInfo, after: datetime) -> datetime:
    """The policy, brute force: scan whole UTC minutes after `after`.

    Every-hour crons fire at each instant whose wall time matches. Fixed-hour crons fire at the
    first occurrence of a matching wall time, or at the end of a gap that swallowed one.
    """
    fixed = len(hours) < 24
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(4 * 24 * 60):
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        matches = wall.minute in minutes and wall.hour in hours
        if not fixed:
            if matches:
                return moment
        else:
            if matches and wall.replace(tzinfo=tz, fold=0).astimezone(UTC) == moment:
                return moment
            before = (moment - timedelta(seconds=1)).astimezone(tz)
            if (before.utcoffset() or timedelta(0)) < (local.utcoffset() or timedelta(0)):  # moment ends a gap
                skipped = before.replace(tzinfo=None, second=0) + timedelta(minutes=1)
                while skipped < wall:
                    if skipped.minute in minutes and skipped.hour in hours:
                        return moment
                    skipped += timedelta(minutes=1)
        moment += timedelta(minutes=1)
    raise AssertionError("no fire within 4 days")


@settings(max_examples=150, deadline=None, database=None)
@given(case=cases())
def test_next_fire_agrees_with_a_brute_force_oracle(case: tuple[str, str, set[int], set[int], datetime]) -> None:
    zone, expr, minutes, hours, after = case
    schedule = parse_schedule("cron", expr, zone, now=NOW)
    expected = [oracle_next(minutes, hours, ZoneInfo(zone), after)]
    for _ in range(2):
        expected.append(oracle_next(minutes, hours, ZoneInfo(zone), expected[-1]))
    assert preview(schedule, after, 3) == expected


@settings(max_examples=60, deadline=None, database=None)
@given(case=cases())
def test_fires_strictly_increase_and_are_whole_utc_seconds(case: tuple[str, str, set[int], set[int], datetime]) -> None:
    zone, expr, _, _, after = case
    got = preview(parse_schedule("cron", expr, zone, now=NOW), after, 15)
    assert len(got) == 15
    assert got[0] > after
    assert all(a < b for a, b in zip(got, got[1:], strict=False))
    assert all(f.tzinfo is UTC and f.microsecond == 0 for f in got)


@settings(max_examples=80, deadline=None, database=None)
@given(case=cases(DST_ZONES))
def test_wall_times_exist_and_fixed_hours_fire_at_the_first_occurrence(
    case: tuple[str, str, set[int], set[int], datetime],
) -> None:
    """Converting a fire to local wall time and back gives the fire (the local time exists); for
    fixed-hour schedules the fold=0 reading does too, i.e. it is never a second occurrence."""
    zone, expr, _, hours, after = case
    tz = ZoneInfo(zone)
    for fire in preview(parse_schedule("cron", expr, zone, now=NOW), after, 10):
        local = fire.astimezone(tz)
        wall = local.replace(tzinfo=None)
        assert wall.replace(tzinfo=tz, fold=local.fold).astimezone(UTC) == fire
        if len(hours) < 24:
            assert wall.replace(tzinfo=tz, fold=0).astimezone(UTC) == fire


@settings(max_examples=12, deadline=None, database=None)
@given(
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    zone=st.sampled_from(DST_ZONES),
    kind=st.sampled_from(["cron", "rrule"]),
)
def test_daily_fixed_time_fires_once_per_local_day_for_a_year(hour: int, minute: int, zone: str, kind: str) -> None:
    tz = ZoneInfo(zone)
    expr = f"{minute} {hour} * * *" if kind == "cron" else f"FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute}"
    schedule = parse_schedule(kind, expr, zone, now=NOW, anchor=datetime(2026, 6, 1, tzinfo=UTC))
    start = datetime(2027, 1, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(2028, 1, 1, tzinfo=tz).astimezone(UTC)
    days: list[date] = []
    fire = next_fire(schedule, start - timedelta(seconds=1))
    while fire is not None and fire < end:
        days.append(fire.astimezone(tz).date())
        fire = next_fire(schedule, fire)
    assert days == [date(2027, 1, 1) + timedelta(days=n) for n in range(365)]


@settings(max_examples=40, deadline=None, database=None)
@given(
    kind_expr=st.sampled_from(
        [
            ("cron", "*/5 * * * *"),
            ("cron", "0 9 * * MON-FRI"),
            ("cron", "30 2 1 * *"),
            ("rrule", "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=9;BYMINUTE=15"),
            ("rrule", "FREQ=MINUTELY;INTERVAL=7"),
            ("rrule", "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=2;BYMINUTE=30"),
            ("rrule", "FREQ=HOURLY;INTERVAL=3"),
        ]
    ),
    case=cases(),
)
def test_preview_starts_strictly_after(
    kind_expr: tuple[str, str], case: tuple[str, str, set[int], set[int], datetime]
) -> None:
    kind, expr = kind_expr
    zone, after = case[0], case[4]
    schedule = parse_schedule(kind, expr, zone, now=NOW, anchor=datetime(2025, 5, 5, 5, 5, tzinfo=UTC))
    got = preview(schedule, after, 3)
    assert got[0] > after
    assert got == sorted(set(got))
    assert preview(schedule, got[0], 2) == got[1:]
