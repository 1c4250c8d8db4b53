"""Validation, kinds, jitter, bounds and descriptions of chalicelib.domain.schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.schedules import (
    KINDS,
    ScheduleError,
    clear_caches,
    describe,
    event_matches,
    next_fire,
    parse_schedule,
    preview,
)

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse(kind: str, expr: str | None, zone: str = "UTC", **kwargs: object) -> object:
    return parse_schedule(kind, expr, zone, now=NOW, **kwargs)  # type: ignore[arg-type]


# (kind, expr, extra kwargs, field, words the message must contain)
BAD_INPUTS = [
    ("cron", "61 * * * *", {}, "schedule_expr", ["minute 61", "0–59"]),
    ("cron", "* 25 * * *", {}, "schedule_expr", ["hour 25", "0–23"]),
    ("cron", "0 0 0 * *", {}, "schedule_expr", ["day-of-month 0", "1–31"]),
    ("cron", "0 0 32 * *", {}, "schedule_expr", ["day-of-month 32"]),
    ("cron", "0 0 * 13 *", {}, "schedule_expr", ["month 13", "1–12"]),
    ("cron", "0 0 * * 8", {}, "schedule_expr", ["day-of-week 8", "0–7"]),
    ("cron", "* * * *", {}, "schedule_expr", ["expected 5 fields", "got 4"]),
    ("cron", "0 0 * * * *", {}, "schedule_expr", ["expected 5 fields", "got 6"]),
    ("cron", "0 0 * FOO *", {}, "schedule_expr", ["month", "'FOO'"]),
    ("cron", "0 0 * * MOX", {}, "schedule_expr", ["day-of-week", "'MOX'"]),
    ("cron", "0 x * * *", {}, "schedule_expr", ["hour", "'x'", "not a number"]),
    ("cron", "*/0 * * * *", {}, "schedule_expr", ["minute step 0"]),
    ("cron", "*/75 * * * *", {}, "schedule_expr", ["minute step 75"]),
    ("cron", "0 5-1 * * *", {}, "schedule_expr", ["hour range 5-1", "reversed"]),
    ("cron", "1,,2 * * * *", {}, "schedule_expr", ["empty list item"]),
    ("cron", "@every 5m", {}, "schedule_expr", ["'@every'", "not supported"]),
    ("cron", "@reboot", {}, "schedule_expr", ["'@reboot'"]),
    ("cron", "0 0 L * *", {}, "schedule_expr", ["'L'"]),
    ("cron", "0 0 * * 1#2", {}, "schedule_expr", ["'#'"]),
    ("cron", "0 0 ? * MON", {}, "schedule_expr", ["'?'"]),
    ("cron", "0 0 31 2 *", {}, "schedule_expr", ["day-of-month 31", "never"]),
    ("cron", "   ", {}, "schedule_expr", ["required"]),
    ("cron", None, {}, "schedule_expr", ["required"]),
    ("rrule", "FREQ=SECONDLY", {}, "schedule_expr", ["SECONDLY", "once a minute"]),
    ("rrule", "FREQ=MINUTELY;BYSECOND=0,30", {}, "schedule_expr", ["BYSECOND=0,30", "more than once a minute"]),
    ("rrule", "FREQ=DAILY;BYSECOND=10,20", {}, "schedule_expr", ["more than once a minute"]),
    ("rrule", "garbage", {}, "schedule_expr", ["'garbage'"]),
    ("rrule", "FREQ=FORTNIGHTLY", {}, "schedule_expr", ["FREQ", "'FORTNIGHTLY'"]),
    ("rrule", "FREQ=DAILY;FOO=1", {}, "schedule_expr", ["unknown RRULE part 'FOO'"]),
    ("rrule", "FREQ=DAILY;BYHOUR=25", {}, "schedule_expr", ["BYHOUR 25"]),
    ("rrule", "FREQ=DAILY;COUNT=0", {}, "schedule_expr", ["COUNT=0"]),
    ("rrule", "FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z", {}, "schedule_expr", ["COUNT and UNTIL"]),
    ("rrule", "FREQ=WEEKLY;BYDAY=XX", {}, "schedule_expr", ["BYDAY", "'XX'"]),
    ("rrule", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", {}, "schedule_expr", ["BYMONTHDAY=30", "never"]),
    ("rrule", "FREQ=MONTHLY;BYMONTHDAY=1;BYSETPOS=2", {}, "schedule_expr", ["never produces a date"]),
    ("rrule", "BYDAY=MO", {}, "schedule_expr", ["'BYDAY=MO'"]),
    ("rrule", "DTSTART:20270101T090000", {}, "schedule_expr", ["missing the RRULE"]),
    ("rrule", "DTSTART:2027-01-01\nRRULE:FREQ=DAILY", {}, "schedule_expr", ["DTSTART", "'2027-01-01'"]),
    ("rrule", "DTSTART:20270231T000000\nRRULE:FREQ=DAILY", {}, "schedule_expr", ["not a valid date"]),
    ("rrule", "DTSTART;TZID=Europe/Paris:20270101T090000\nRRULE:FREQ=DAILY", {}, "schedule_expr", ["TZID"]),
    ("rrule", "RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", {}, "schedule_expr", ["only one RRULE"]),
    ("rrule", "RRULE:FREQ=DAILY\nEXRULE:FREQ=WEEKLY", {}, "schedule_expr", ["EXRULE"]),
    ("once", "tomorrow at noon", {}, "schedule_expr", ["'tomorrow at noon'", "ISO 8601"]),
    ("once", "2027-13-01T00:00:00", {}, "schedule_expr", ["ISO 8601"]),
    ("once", "2027-03-28", {}, "schedule_expr", ["needs a date and a time"]),
    ("once", "2026-12-31T23:58:00Z", {}, "schedule_expr", ["is in the past"]),
    ("event", "order created", {}, "schedule_expr", ["'order created'"]),
    ("event", "order.**", {}, "schedule_expr", ["'order.**'"]),
    ("event", "ord$r", {}, "schedule_expr", ["'ord$r'"]),
    ("event", ".*", {}, "schedule_expr", ["'.*'"]),
    ("event", "x" * 257, {}, "schedule_expr", ["256"]),
    ("weekly", "0 0 * * *", {}, "schedule_kind", ["'weekly'", "cron, rrule, once, event"]),
    ("cron", "0 0 * * *", {"timezone": "Mars/Base"}, "timezone", ["unknown time zone 'Mars/Base'"]),
    ("cron", "0 0 * * *", {"timezone": "../../etc/passwd"}, "timezone", ["unknown time zone"]),
    ("cron", "0 0 * * *", {"timezone": "localtime"}, "timezone", ["unknown time zone"]),
    ("cron", "0 0 * * *", {"jitter_seconds": -1}, "jitter_seconds", ["between 0 and 3600"]),
    ("cron", "0 0 * * *", {"jitter_seconds": 3601}, "jitter_seconds", ["between 0 and 3600"]),
    ("cron", "0 0 * * *", {"jitter_seconds": True}, "jitter_seconds", ["integer"]),
    (
        "cron",
        "0 0 * * *",
        {"starts_at": z("2027-02-01T00:00:00Z"), "ends_at": z("2027-02-01T00:00:00Z")},
        "ends_at",
        ["after starts_at"],
    ),
    ("cron", "0 0 * * *", {"starts_at": datetime(2027, 2, 1)}, "starts_at", ["UTC offset"]),
]


@pytest.mark.parametrize(("kind", "expr", "extra", "field", "words"), BAD_INPUTS)
def test_bad_input_names_the_field_and_the_problem(
    kind: str, expr: str | None, extra: dict[str, object], field: str, words: list[str]
) -> None:
    extra = dict(extra)
    zone = extra.pop("timezone", "UTC")
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(kind, expr, zone, now=NOW, **extra)  # type: ignore[arg-type]
    assert caught.value.field == field
    for word in words:
        assert word in caught.value.message, caught.value.message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "expr",
    [
        "*/15 * * * *",
        "0 9 * * MON-FRI",
        "0 0 1 JAN *",
        "0 0 * * 7",
        "0 0 * * sun",
        "5/15 * * * *",
        "0 0-12/3 * * *",
        "0  9   * * 1,3,5",
        "@hourly",
        "@DAILY",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
        "0 0 29 2 *",
    ],
)
def test_valid_cron_forms(expr: str) -> None:
    schedule = parse_schedule("cron", expr, now=NOW)
    assert next_fire(schedule, NOW) is not None


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", "2027-01-01T01:00:00Z"),
        ("@daily", "2027-01-02T00:00:00Z"),
        ("@weekly", "2027-01-03T00:00:00Z"),  # 2027-01-01 is a Friday; next Sunday
        ("@monthly", "2027-02-01T00:00:00Z"),
        ("@yearly", "2028-01-01T00:00:00Z"),
    ],
)
def test_macros(macro: str, expected: str) -> None:
    assert next_fire(parse_schedule("cron", macro, now=NOW), NOW) == z(expected)


def test_dom_and_dow_both_restricted_means_either() -> None:
    """Vixie cron: `0 0 13 * FRI` fires on the 13th and on every Friday."""
    schedule = parse_schedule("cron", "0 0 13 * FRI", now=NOW)
    assert preview(schedule, z("2027-01-05T00:00:00Z"), 3) == [
        z("2027-01-08T00:00:00Z"),
        z("2027-01-13T00:00:00Z"),
        z("2027-01-15T00:00:00Z"),
    ]


# ---- once


def test_once_with_offset_is_absolute_and_fires_once() -> None:
    schedule = parse_schedule("once", "2027-03-28T02:30:00+05:00", "Europe/Chisinau", now=NOW)
    assert preview(schedule, NOW, 5) == [z("2027-03-27T21:30:00Z")]
    assert next_fire(schedule, z("2027-03-27T21:30:00Z")) is None


@pytest.mark.parametrize(
    ("expr", "zone", "expected"),
    [
        ("2027-03-28T02:30:00", "Europe/Chisinau", "2027-03-28T00:00:00Z"),  # gap -> 03:00 EEST
        ("2027-10-31T02:30:00", "Europe/Chisinau", "2027-10-30T23:30:00Z"),  # repeated -> first (+03:00)
        ("2027-06-01T09:00:00", "America/New_York", "2027-06-01T13:00:00Z"),
        ("2027-06-01 09:00", "UTC", "2027-06-01T09:00:00Z"),
        ("2027-06-01T09:00:00Z", "Asia/Kolkata", "2027-06-01T09:00:00Z"),
        ("2027-06-01T09:00:00.250Z", "UTC", "2027-06-01T09:00:01Z"),  # never before the requested instant
    ],
)
def test_once_local_times_follow_the_dst_policy(expr: str, zone: str, expected: str) -> None:
    assert next_fire(parse_schedule("once", expr, zone, now=NOW), NOW) == z(expected)


def test_once_past_window() -> None:
    parse_schedule("once", "2026-12-31T23:59:00Z", now=NOW)  # 60 s ago: accepted
    with pytest.raises(ScheduleError, match="in the past"):
        parse_schedule("once", "2026-12-31T23:58:59Z", now=NOW)
    old = parse_schedule("once", "2020-01-01T00:00:00Z", now=NOW, check_past=False)
    assert next_fire(old, z("2019-12-31T00:00:00Z")) == z("2020-01-01T00:00:00Z")


# ---- rrule


def test_rrule_count_is_exhausted() -> None:
    schedule = parse("rrule", "DTSTART:20270104T090000Z\nRRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3")
    got = preview(schedule, NOW, 10)  # type: ignore[arg-type]
    assert got == [z("2027-01-04T09:00:00Z"), z("2027-01-11T09:00:00Z"), z("2027-01-18T09:00:00Z")]
    assert next_fire(schedule, got[-1]) is None  # type: ignore[arg-type]


def test_rrule_until_is_inclusive_and_exhausted() -> None:
    schedule = parse("rrule", "DTSTART:20270101T120000Z\nRRULE:FREQ=DAILY;UNTIL=20270103T120000Z")
    assert preview(schedule, NOW, 10) == [  # type: ignore[arg-type]
        z("2027-01-01T12:00:00Z"),
        z("2027-01-02T12:00:00Z"),
        z("2027-01-03T12:00:00Z"),
    ]


def test_rrule_exdate_and_rdate() -> None:
    text = "DTSTART:20270101T080000\nRRULE:FREQ=DAILY;COUNT=3\nEXDATE:20270102T080000\nRDATE:20270110T180000"
    schedule = parse("rrule", text, "Asia/Kolkata")
    assert preview(schedule, z("2026-12-01T00:00:00Z"), 10) == [  # type: ignore[arg-type]
        z("2027-01-01T02:30:00Z"),
        z("2027-01-03T02:30:00Z"),
        z("2027-01-10T12:30:00Z"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "DTSTART;TZID=America/New_York:20270301T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO",
        "DTSTART:20270301T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO",  # floating: read in the task timezone
        "DTSTART:20270301T140000Z\nRRULE:FREQ=WEEKLY;BYDAY=MO",  # 14:00Z = 09:00 EST, then 09:00 local
        "DTSTART:20270301T090000 RRULE:FREQ=WEEKLY;BYDAY=MO",  # one line
        "dtstart:20270301T090000\nrrule:freq=weekly;byday=mo",
    ],
)
def test_rrule_dtstart_forms(text: str) -> None:
    schedule = parse("rrule", text, "America/New_York")
    assert preview(schedule, z("2027-03-01T00:00:00Z"), 3) == [  # type: ignore[arg-type]
        z("2027-03-01T14:00:00Z"),  # EST
        z("2027-03-08T14:00:00Z"),
        z("2027-03-15T13:00:00Z"),  # EDT from 2027-03-14
    ]


def test_rrule_without_dtstart_starts_at_the_anchor_minute() -> None:
    anchor = z("2027-01-01T10:17:43.5Z")
    schedule = parse_schedule("rrule", "FREQ=HOURLY;INTERVAL=2", now=NOW, anchor=anchor)
    assert preview(schedule, z("2026-01-01T00:00:00Z"), 2) == [z("2027-01-01T10:17:00Z"), z("2027-01-01T12:17:00Z")]
    prefixed = parse_schedule("rrule", "RRULE:FREQ=HOURLY;INTERVAL=2", now=NOW, anchor=anchor)
    assert prefixed.dtstart == schedule.dtstart == datetime(2027, 1, 1, 10, 17)
    assert preview(prefixed, NOW, 5) == preview(schedule, NOW, 5)


def test_rrule_with_an_old_dtstart_keeps_its_lattice() -> None:
    """dateutil iterates from DTSTART; ten years of minutes must still give the exact answer."""
    schedule = parse("rrule", "DTSTART:20170101T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=7")
    after = z("2027-06-01T12:00:00Z")
    elapsed = int((after - z("2017-01-01T00:00:00Z")).total_seconds()) // 60
    expected = z("2017-01-01T00:00:00Z") + timedelta(minutes=(elapsed // 7 + 1) * 7)
    assert next_fire(schedule, after) == expected  # type: ignore[arg-type]


# ---- event

EVENT_CASES = [
    ("order.created", "order.created", True),
    ("order.created", "order.created.v2", False),
    ("order.*", "order.created", True),
    ("order.*", "order.created.v2", True),
    ("order.*", "order", False),
    ("order.*", "orders.created", False),
    ("*", "anything:at-all", True),
    (None, "order.created", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), EVENT_CASES)
def test_event_matches(pattern: str | None, name: str, expected: bool) -> None:
    assert event_matches(pattern, name) is expected


def test_event_schedules_never_fire() -> None:
    for expr in ("order.*", None, "*", "billing:invoice-paid"):
        schedule = parse_schedule("event", expr, now=NOW)
        assert next_fire(schedule, NOW) is None
        assert preview(schedule, NOW, 3) == []


# ---- jitter and bounds


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.text(max_size=40), jitter=st.integers(1, 3600))
def test_jitter_offset_is_stable_and_in_range(seed: str, jitter: int) -> None:
    first = parse_schedule("cron", "0 * * * *", now=NOW, jitter_seconds=jitter, jitter_seed=seed)
    clear_caches()
    second = parse_schedule("cron", "0 * * * *", now=NOW, jitter_seconds=jitter, jitter_seed=seed)
    assert first.jitter_offset == second.jitter_offset
    assert 0 <= first.jitter_offset < jitter
    plain = parse_schedule("cron", "0 * * * *", now=NOW)
    offset = timedelta(seconds=first.jitter_offset)
    after = z("2027-05-05T05:05:05Z")
    assert next_fire(first, after) == next_fire(plain, after - offset) + offset  # type: ignore[operator]


def test_jitter_spreads_tasks() -> None:
    offsets = {
        parse_schedule("cron", "0 * * * *", now=NOW, jitter_seconds=600, jitter_seed=f"task-{n}").jitter_offset
        for n in range(50)
    }
    assert len(offsets) > 40
    assert parse_schedule("cron", "0 * * * *", now=NOW, jitter_seed="x").jitter_offset == 0


def test_bounds_apply_to_the_jittered_instant() -> None:
    base = parse_schedule("cron", "0 * * * *", now=NOW, jitter_seconds=3600, jitter_seed="task-7")
    j = timedelta(seconds=base.jitter_offset)
    assert j > timedelta(0)
    starts = z("2027-01-01T10:00:00Z") + j  # exactly the 10:00 fire
    ends = z("2027-01-01T12:00:00Z") + j
    bounded = parse_schedule(
        "cron", "0 * * * *", now=NOW, jitter_seconds=3600, jitter_seed="task-7", starts_at=starts, ends_at=ends
    )
    assert preview(bounded, NOW, 10) == [starts, starts + timedelta(hours=1), ends]
    assert next_fire(bounded, ends) is None
    early = parse_schedule(
        "cron", "0 * * * *", now=NOW, jitter_seconds=3600, jitter_seed="task-7", ends_at=ends - timedelta(seconds=1)
    )
    assert preview(early, z("2027-01-01T10:30:00Z") + j, 5) == [z("2027-01-01T11:00:00Z") + j]


def test_once_respects_bounds() -> None:
    schedule = parse_schedule("once", "2027-02-01T00:00:00Z", now=NOW, ends_at=z("2027-01-31T00:00:00Z"))
    assert next_fire(schedule, NOW) is None


# ---- descriptions and API surface


@pytest.mark.parametrize(
    ("kind", "expr", "zone", "expected"),
    [
        ("cron", "30 2 * * *", "UTC", "At 02:30 AM"),
        ("cron", "30 2 * * *", "Europe/Chisinau", "At 02:30 AM (Europe/Chisinau)"),
        ("cron", "@hourly", "UTC", "Every hour"),
        ("rrule", "DTSTART:20270104T090000Z\nRRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5", "UTC",
         "Every week on Monday at 09:00 (UTC), 5 times, starting 2027-01-04T09:00:00"),
        ("rrule", "DTSTART:20270101T090000\nRRULE:FREQ=MONTHLY;BYDAY=-1FR", "Europe/Chisinau",
         "Every month on the last Friday at 09:00 (Europe/Chisinau), starting 2027-01-01T09:00:00"),
        ("once", "2027-10-31T02:30:00", "Europe/Chisinau", "Once at 2027-10-31T02:30:00 Europe/Chisinau"),
        ("once", "2027-03-28T02:30:00", "Europe/Chisinau",
         "Once at 2027-03-28T02:30:00 Europe/Chisinau (inside a DST gap: fires at 03:00:00)"),
        ("event", "order.*", "UTC", 'On event "order.*"'),
        ("event", "*", "UTC", "On any event"),
        ("event", None, "UTC", "Only on run_now"),
    ],
)  # fmt: skip
def test_describe(kind: str, expr: str | None, zone: str, expected: str) -> None:
    assert describe(parse_schedule(kind, expr, zone, now=NOW)) == expected


def test_describe_mentions_jitter_and_bounds() -> None:
    schedule = parse_schedule(
        "cron", "0 9 * * *", now=NOW, jitter_seconds=60, jitter_seed="a", starts_at=z("2027-02-01T00:00:00Z")
    )
    text = describe(schedule)
    assert text.startswith("At 09:00 AM, ") and "jitter" in text and "not before 2027-02-01T00:00:00Z" in text


def test_schedules_are_hashable_values() -> None:
    a = parse_schedule("cron", "0 9 * * *", "Europe/Chisinau", now=NOW)
    clear_caches()
    b = parse_schedule("cron", "0  9 * * *", "Europe/Chisinau", now=NOW)
    c = parse_schedule("cron", "0 9 * * *", "UTC", now=NOW)
    assert a == parse_schedule("cron", "0 9 * * *", "Europe/Chisinau", now=NOW)
    assert hash(a) == hash(parse_schedule("cron", "0 9 * * *", "Europe/Chisinau", now=NOW))
    assert a != c and len({a, c}) == 2
    assert next_fire(a, NOW) == next_fire(b, NOW)
    with pytest.raises(AttributeError):
        a.kind = "once"  # type: ignore[misc]


def test_naive_datetimes_are_programming_errors() -> None:
    schedule = parse_schedule("cron", "0 9 * * *", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(schedule, datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("cron", "0 9 * * *", now=datetime(2027, 1, 1))


def test_preview_count_is_validated() -> None:
    schedule = parse_schedule("cron", "0 9 * * *", now=NOW)
    assert len(preview(schedule, NOW, 100)) == 100
    for bad in (0, 101):
        with pytest.raises(ScheduleError) as caught:
            preview(schedule, NOW, bad)
        assert caught.value.field == "count"


def test_results_accept_any_aware_after() -> None:
    from zoneinfo import ZoneInfo

    schedule = parse_schedule("cron", "0 9 * * *", "Asia/Kolkata", now=NOW)
    after = datetime(2027, 1, 1, 9, 0, 0, 500, tzinfo=ZoneInfo("America/New_York"))  # 14:00:00.0005Z
    fire = next_fire(schedule, after)
    assert fire == z("2027-01-02T03:30:00Z") and fire.tzinfo is UTC and fire.microsecond == 0
    assert KINDS == ("cron", "rrule", "once", "event")
