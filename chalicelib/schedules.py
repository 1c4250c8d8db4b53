"""Schedules: parse and validate a task's schedule, and compute its fire instants.

Four kinds (API.md "Schedules"): ``cron`` (5 fields, iterated by cronsim), ``rrule`` (RFC 5545,
iterated by dateutil), ``once`` (an ISO 8601 timestamp) and ``event`` (a name pattern, never
scheduled). Both libraries are asked for *naive local wall-clock* matches only; this module maps
wall-clock times to UTC instants with the project's DST policy, because neither library
implements that policy for every schedule shape:

* fixed-hour schedules (cron hour field not every hour, rrule with BYHOUR or a daily-or-slower
  frequency, once): a wall time inside a spring-forward gap fires once at the first instant after
  the gap; a repeated wall time fires once, at its first occurrence;
* every-hour schedules (cron hour field ``*``, hourly/minutely rrules without BYHOUR) follow real
  elapsed time: they fire in both copies of a repeated hour and never inside a gap.

Every function is pure: the caller passes ``now``/``after``; nothing here reads the clock.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import gcd
from typing import Any, TypeAlias, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import FormatError, MissingFieldError, WrongArgumentError, get_description
from cronsim import CronSim, CronSimError
from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, WEEKLY, YEARLY, rrule, rruleset, rrulestr

__all__ = [
    "KINDS",
    "MISFIRE_POLICIES",
    "MissedPlan",
    "Schedule",
    "ScheduleError",
    "clear_caches",
    "describe",
    "event_matches",
    "fixed_hour",
    "next_fire",
    "parse_schedule",
    "plan_missed",
    "preview",
]

KINDS = ("cron", "rrule", "once", "event")
MISFIRE_POLICIES = ("run_once", "skip", "run_all")

MAX_EXPR_CHARS = 4096
MIN_YEAR, MAX_YEAR = 1900, 9000  # for once/DTSTART/UNTIL/RDATE/EXDATE: far from datetime's limits
MAX_JITTER_SECONDS = 3600
MAX_PREVIEW = 100
MAX_RRULE_COUNT = 10_000
ONCE_PAST_TOLERANCE = timedelta(seconds=60)
RUN_ALL_CAP = 100
SKIPPED_RECORD_CAP = 1000

_T = TypeVar("_T")
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)
_LOOP_GUARD = 10_000  # bound on wall-clock candidates examined for one instant (folds, gaps)
_UTC_KEYS = frozenset(
    {
        "UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu",
        "GMT", "Etc/GMT", "GMT0", "Etc/GMT0", "GMT+0", "Etc/GMT+0", "GMT-0", "Etc/GMT-0",
        "Greenwich", "Etc/Greenwich",
    }
)  # fmt: skip


class ScheduleError(ValueError):
    """Invalid schedule input; ``field`` names the offending request field (API problem details)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class _CronRule:
    """A compiled cron expression: cronsim's parsed field sets, reused for every query.

    Building a CronSim re-parses the five fields (the slow part of a one-off query), so the
    parsed state is kept and a fresh iterator is assembled from it. The sets are interned: most
    expressions share most fields, which keeps 10,000 cached expressions under 10 MB.
    """

    expr: str  # normalized 5-field text given to cronsim (macros expanded)
    parts: list[str]
    day_and: bool
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int | tuple[int, int]]
    fixed: bool  # False when every hour of the day matches: DST follows elapsed time

    def iter_from(self, start: datetime) -> Iterator[datetime]:
        """Naive wall-clock matches strictly after naive ``start`` (whole seconds)."""
        # The state CronSim.__init__ builds for (expr, naive start), assigned in the same order so
        # CPython keeps its compact attribute layout. cronsim only reads the sets.
        it: Any = CronSim.__new__(CronSim)
        it.skip_initial_tick = False
        it.dt = start
        it.tick_direction = 1
        it.parts = self.parts
        it.day_and = self.day_and
        it.seconds = self.seconds
        it.minutes = self.minutes
        it.hours = self.hours
        it.days = self.days
        it.months = self.months
        it.weekdays = self.weekdays
        it.fixup_tz = None
        return cast(Iterator[datetime], it)


@dataclass(frozen=True, eq=False)
class _RRule:
    """A compiled RFC 5545 rule over naive local datetimes (COUNT already turned into UNTIL)."""

    rule: rrule
    dtstart: datetime
    until: datetime | None  # naive local, inclusive
    rdates: tuple[datetime, ...]
    exdates: tuple[datetime, ...]
    fixed: bool
    step: timedelta | None  # lattice step that may move DTSTART forward without changing the set
    parts: tuple[tuple[str, str], ...]  # validated RRULE parts, for describe()

    def iter_from(self, start: datetime) -> Iterator[datetime]:
        """Naive occurrences strictly after naive ``start``.

        dateutil always iterates from DTSTART, so a rule that started long ago is restarted on its
        own lattice just before ``start`` (same occurrences, bounded work).
        """
        rule = self.rule
        if self.step is not None and start - self.dtstart > 2 * self.step:
            periods = (start - self.dtstart) // self.step - 1
            rule = rule.replace(dtstart=self.dtstart + periods * self.step)
        if not self.rdates and not self.exdates:
            return iter(rule.xafter(start))
        rset = rruleset()
        rset.rrule(rule)
        for d in self.rdates:
            rset.rdate(d)
        for d in self.exdates:
            rset.exdate(d)
        return iter(rset.xafter(start))


_Rule: TypeAlias = "_CronRule | _RRule | datetime | None"  # datetime: a once instant (UTC); None: event


@dataclass(frozen=True)
class Schedule:
    """A parsed, validated schedule. Immutable and hashable (usable as a cache key).

    ``jitter_offset`` is the stable per-task offset in whole seconds added to every fire;
    ``starts_at``/``ends_at`` are UTC bounds applied to the jittered instant; ``dtstart`` is the
    effective naive-local DTSTART of an rrule (None for other kinds); ``rule`` is the compiled
    rule object (excluded from equality: it is a function of the other fields).
    """

    kind: str
    expr: str | None
    tz: ZoneInfo
    jitter_seconds: int
    jitter_offset: int
    starts_at: datetime | None
    ends_at: datetime | None
    dtstart: datetime | None
    rule: _Rule = field(compare=False, repr=False)
    utc: bool = field(compare=False, repr=False)  # zone is UTC: skip all offset work


@dataclass(frozen=True)
class MissedPlan:
    """What the tick does with fires that came due while it was not running (see plan_missed)."""

    run: tuple[datetime, ...]
    skipped: tuple[datetime, ...]
    next_after: datetime | None
    skipped_truncated: bool = False  # more fires were skipped than are listed in ``skipped``


# --------------------------------------------------------------------------- public API


def parse_schedule(
    kind: str,
    expr: str | None,
    timezone: str = "UTC",
    *,
    now: datetime,
    anchor: datetime | None = None,
    jitter_seconds: int = 0,
    jitter_seed: str = "",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    check_past: bool = True,
) -> Schedule:
    """Validate and compile a schedule; raise ScheduleError naming the bad field.

    ``now`` is used only to reject a ``once`` time more than 60 s in the past (unless
    ``check_past`` is False, e.g. when re-reading a stored task). ``anchor`` is the DTSTART of an
    rrule that has none (the task's created_at; default ``now``), truncated to the minute.
    Results are cached (LRU), so calling this on every tick is cheap.
    """
    _require_aware(now, "now")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScheduleError("schedule_kind", f"unknown schedule_kind {kind!r}; expected one of {', '.join(KINDS)}")
    if expr is not None and not isinstance(expr, str):
        raise ScheduleError("schedule_expr", "must be a string")
    if timezone is None:
        timezone = "UTC"
    if not isinstance(timezone, str):
        raise ScheduleError("timezone", "must be a string (an IANA time zone name)")
    if isinstance(jitter_seconds, bool) or not isinstance(jitter_seconds, int):
        raise ScheduleError("jitter_seconds", "must be an integer")
    if not isinstance(jitter_seed, str):
        raise ScheduleError("jitter_seconds", "jitter seed must be a string")
    starts = _bound(starts_at, "starts_at")
    ends = _bound(ends_at, "ends_at")
    anchor_key: datetime | None = None
    if kind == "rrule" and (expr is None or "DTSTART" not in expr.upper()):
        base = now if anchor is None else _require_aware(anchor, "anchor")
        anchor_key = base.astimezone(UTC).replace(second=0, microsecond=0)
    schedule = _parse_cached(kind, expr, timezone, anchor_key, jitter_seconds, jitter_seed, starts, ends)
    if kind == "once" and check_past:
        instant = schedule.rule
        assert isinstance(instant, datetime)
        if instant < now - ONCE_PAST_TOLERANCE:
            raise ScheduleError(
                "schedule_expr", f"{schedule.expr} ({_z(instant)}) is in the past; a once time may be at most 60 s ago"
            )
    return schedule


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """First fire instant strictly after ``after`` (UTC, whole seconds), with jitter and bounds.

    None when the schedule is exhausted (once fired, COUNT/UNTIL, ends_at) or of kind event.
    """
    _require_aware(after, "after")
    rule = schedule.rule
    if rule is None:
        return None
    jitter = schedule.jitter_offset
    lo = after.astimezone(UTC)
    if jitter:
        lo -= timedelta(seconds=jitter)  # base + jitter > after  <=>  base > after - jitter
    if schedule.starts_at is not None:
        floor = schedule.starts_at - timedelta(seconds=jitter) - _MICROSECOND
        if floor > lo:
            lo = floor
    if isinstance(rule, datetime):
        base: datetime | None = rule if rule > lo else None
    elif schedule.utc:
        local = next(rule.iter_from(lo.replace(tzinfo=None, microsecond=0)), None)
        base = None if local is None else local.replace(tzinfo=UTC)
    elif rule.fixed:
        base = _first_fixed(rule.iter_from, schedule.tz, lo)
    else:
        base = _first_elapsed(rule.iter_from, schedule.tz, lo)
    if base is None:
        return None
    fire = base + timedelta(seconds=jitter) if jitter else base
    if schedule.ends_at is not None and fire > schedule.ends_at:
        return None
    return fire


def preview(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` (1-100) fire instants strictly after ``after``; fewer when exhausted."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW:
        raise ScheduleError("count", f"must be an integer between 1 and {MAX_PREVIEW}")
    out: list[datetime] = []
    cursor = after
    while len(out) < count:
        fire = next_fire(schedule, cursor)
        if fire is None:
            break
        out.append(fire)
        cursor = fire
    return out


def fixed_hour(schedule: Schedule) -> bool:
    """True when the fixed-hour DST policy applies (gap -> after the gap, repeat -> first copy)."""
    rule = schedule.rule
    if rule is None:
        return False
    if isinstance(rule, datetime):
        return True
    return rule.fixed


def describe(schedule: Schedule) -> str:
    """Human-readable text for previews, e.g. "At 02:30 AM (Europe/Chisinau)"."""
    rule = schedule.rule
    zone = schedule.tz.key
    if schedule.kind == "event":
        if schedule.expr is None:
            text = "Only on run_now"
        elif schedule.expr == "*":
            text = "On any event"
        else:
            text = f'On event "{schedule.expr}"'
    elif isinstance(rule, datetime):
        local = rule.astimezone(schedule.tz).replace(tzinfo=None)
        wall = datetime.fromisoformat(schedule.expr or "")
        if wall.tzinfo is None and local - wall >= timedelta(minutes=1):  # moved forward out of a gap
            text = f"Once at {wall.isoformat()} {zone} (inside a DST gap: fires at {local.time().isoformat()})"
        else:
            text = f"Once at {local.isoformat()} {zone}"
    elif isinstance(rule, _CronRule):
        try:
            text = get_description(rule.expr)
        except (FormatError, MissingFieldError, WrongArgumentError, ValueError, KeyError, IndexError):
            # cron-descriptor is best effort; the expression itself was validated
            text = f"Cron {rule.expr}"
        if zone != "UTC":
            text += f" ({zone})"
    else:
        assert isinstance(rule, _RRule)
        text = _describe_rrule(rule, zone)
    if schedule.jitter_offset:
        text += f", {schedule.jitter_offset} s after each time (jitter)"
    if schedule.starts_at is not None:
        text += f", not before {_z(schedule.starts_at)}"
    if schedule.ends_at is not None:
        text += f", not after {_z(schedule.ends_at)}"
    return text


def event_matches(pattern: str | None, name: str) -> bool:
    """Does an event named ``name`` trigger a task with this pattern?

    ``order.created`` matches exactly; ``order.*`` matches any name starting with ``order.``;
    ``*`` matches everything; None matches nothing (such tasks run only on run_now).
    """
    if pattern is None:
        return False
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def plan_missed(
    schedule: Schedule, first_pending: datetime, now: datetime, policy: str, *, grace_seconds: int = 60
) -> MissedPlan:
    """Decide which due fires to run and which to record as skipped (``skip_reason: "missed"``).

    The due fires are ``first_pending`` (the stored next_run_at) and every later fire up to and
    including ``now``. Rules, in order:

    1. Nothing due (``first_pending > now``): nothing to do; ``next_after = first_pending``.
    2. Exactly one fire due: it runs under every policy, however late. Its successor is not due
       yet, so it was delayed, not missed.
    3. Several due (the scheduler was down): a fire at or after ``now - grace_seconds`` is on time
       and runs under every policy; the older ones are *missed*:
       ``run_once`` also runs the most recent due fire when none is on time, and skips the rest;
       ``skip`` runs only the on-time fires; ``run_all`` runs every due fire.
    4. At most RUN_ALL_CAP (100) fires run, always the most recent ones; older ones are skipped.
    5. ``skipped`` lists at most SKIPPED_RECORD_CAP (1000) instants, the most recent ones;
       ``skipped_truncated`` is True when more were skipped (enumeration stops there too, so an
       ancient ``first_pending`` with an every-minute cron costs a few thousand steps, not
       millions). Nothing is dropped silently: the caller logs or records the truncation.

    ``next_after`` is the first fire strictly after ``now`` (the new next_run_at).
    """
    if policy not in MISFIRE_POLICIES:
        raise ScheduleError(
            "misfire_policy", f"unknown misfire_policy {policy!r}; expected one of {', '.join(MISFIRE_POLICIES)}"
        )
    _require_aware(first_pending, "first_pending")
    _require_aware(now, "now")
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    first = first_pending.astimezone(UTC)
    current = now.astimezone(UTC)
    if first > current:
        return MissedPlan((), (), first)
    due, truncated = _due_fires(schedule, first, current, SKIPPED_RECORD_CAP + RUN_ALL_CAP + 1)
    if len(due) == 1 and not truncated:
        run = due
    else:
        on_time = [f for f in due if f >= current - timedelta(seconds=grace_seconds)]
        if policy == "run_all":
            run = due
        elif policy == "run_once":
            run = on_time or due[-1:]
        else:
            run = on_time
    run = run[-RUN_ALL_CAP:]
    chosen = set(run)
    skipped = [f for f in due if f not in chosen]
    truncated = truncated or len(skipped) > SKIPPED_RECORD_CAP
    return MissedPlan(
        run=tuple(run),
        skipped=tuple(skipped[-SKIPPED_RECORD_CAP:]),
        next_after=next_fire(schedule, current),
        skipped_truncated=truncated,
    )


def clear_caches() -> None:
    """Drop the parse caches (tests and the bench's cold figures)."""
    _parse_cached.cache_clear()
    _compile_cron.cache_clear()
    _shared.cache_clear()


# --------------------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=16384)
def _parse_cached(
    kind: str,
    expr: str | None,
    timezone: str,
    anchor: datetime | None,
    jitter_seconds: int,
    jitter_seed: str,
    starts_at: datetime | None,
    ends_at: datetime | None,
) -> Schedule:
    tz = _zone(timezone)
    if not 0 <= jitter_seconds <= MAX_JITTER_SECONDS:
        raise ScheduleError("jitter_seconds", f"must be between 0 and {MAX_JITTER_SECONDS}")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise ScheduleError("ends_at", f"must be after starts_at ({_z(ends_at)} <= {_z(starts_at)})")
    text = None if expr is None else expr.strip()
    if text is not None and len(text) > MAX_EXPR_CHARS:
        raise ScheduleError("schedule_expr", f"is longer than {MAX_EXPR_CHARS} characters")
    rule: _Rule
    dtstart = None
    if kind == "event":
        if text is not None:
            _check_event_pattern(text)
        rule = None
    else:
        if not text:
            raise ScheduleError("schedule_expr", f"is required for schedule_kind {kind}")
        if kind == "cron":
            rule = _compile_cron(text)
        elif kind == "once":
            rule = _parse_once(text, tz)
        else:
            assert anchor is not None or "DTSTART" in text.upper()
            rule = _compile_rrule(text, tz, anchor)
            dtstart = rule.dtstart
    offset = 0
    if jitter_seconds:
        digest = hashlib.sha256(f"{jitter_seed}\x00{jitter_seconds}".encode()).digest()
        offset = int.from_bytes(digest[:8], "big") % jitter_seconds
    return Schedule(
        kind=kind,
        expr=text,
        tz=tz,
        jitter_seconds=jitter_seconds,
        jitter_offset=offset,
        starts_at=starts_at,
        ends_at=ends_at,
        dtstart=dtstart,
        rule=rule,
        utc=tz.key in _UTC_KEYS,
    )


def _zone(name: str) -> ZoneInfo:
    if name in ("localtime", "posixrules") or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        raise ScheduleError("timezone", f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError("timezone", f"unknown time zone {name!r}") from None


def _bound(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ScheduleError(name, "must be a timestamp")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(name, "must include a UTC offset (e.g. 2027-03-28T00:00:00Z)")
    return value.astimezone(UTC)


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value


_EVENT_NAME = re.compile(r"[A-Za-z0-9._:\-]+")


def _check_event_pattern(pattern: str) -> None:
    if pattern == "*":
        return
    if len(pattern) > 256:
        raise ScheduleError("schedule_expr", "event pattern is longer than 256 characters")
    prefix = pattern[:-2] if pattern.endswith(".*") else pattern
    if not prefix or not _EVENT_NAME.fullmatch(prefix):
        raise ScheduleError(
            "schedule_expr",
            f"event pattern {pattern!r} is not valid: use letters, digits and . _ : - "
            "(e.g. order.created), optionally ending in .* (order.*), or * for every event",
        )


# ---- cron

_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@functools.lru_cache(maxsize=16384)
def _compile_cron(text: str) -> _CronRule:
    """Validate a cron expression with precise messages, then let cronsim parse it."""
    if text.startswith("@"):
        word = text.split()[0]
        if word.lower() not in _CRON_MACROS or len(text.split()) != 1:
            raise ScheduleError(
                "schedule_expr",
                f"{word!r} is not supported; use 5 fields or one of {', '.join(sorted(_CRON_MACROS))}",
            )
        expr = _CRON_MACROS[word.lower()]
    else:
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(
                "schedule_expr",
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}",
            )
        for value, spec in zip(fields, _CRON_FIELDS, strict=True):
            _check_cron_field(value, *spec)
        expr = " ".join(fields)
    try:
        template = CronSim(expr, datetime(2000, 1, 1))  # naive: wall-clock iteration only
    except CronSimError:
        # Fields are individually valid here; cronsim only rejects a day that no month has.
        dom, month = expr.split()[2:4]
        raise ScheduleError(
            "schedule_expr", f"day-of-month {dom} never occurs in month {month}; the schedule would never fire"
        ) from None
    return _CronRule(
        expr=expr,
        parts=template.parts,
        day_and=template.day_and,
        seconds=_shared(frozenset(template.seconds)),
        minutes=_shared(frozenset(template.minutes)),
        hours=_shared(frozenset(template.hours)),
        days=_shared(frozenset(template.days)),
        months=_shared(frozenset(template.months)),
        weekdays=_shared(frozenset(template.weekdays)),
        fixed=len(template.hours) < 24,
    )


@functools.lru_cache(maxsize=8192)
def _shared(values: frozenset[_T]) -> frozenset[_T]:
    """One object per distinct field set (interning)."""
    return values


def _check_cron_field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> None:
    for item in text.split(","):
        if not item:
            raise ScheduleError("schedule_expr", f"{name} field {text!r} has an empty list item")
        for char, meaning in (("?", "use '*' instead"), ("#", "nth-weekday '#' is not standard cron")):
            if char in item:
                raise ScheduleError("schedule_expr", f"{name} {item!r}: '{char}' is not supported ({meaning})")
        base, slash, step = item.partition("/")
        if slash:
            if not step.isascii() or not step.isdigit():
                raise ScheduleError("schedule_expr", f"{name} step {step!r} is not a number")
            top = hi - lo if name != "day-of-week" else 6
            if not 1 <= int(step) <= top:
                raise ScheduleError("schedule_expr", f"{name} step {int(step)} is out of range 1–{top}")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        if dash and (not start or not end):
            raise ScheduleError("schedule_expr", f"{name} range {base!r} needs a start and an end")
        first = _cron_value(start, name, lo, hi, names)
        if dash:
            last = _cron_value(end, name, lo, hi, names)
            if first > last:
                raise ScheduleError("schedule_expr", f"{name} range {base} is reversed (start is after end)")


def _cron_value(token: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    if token.isascii() and token.isdigit():
        value = int(token)
        if not lo <= value <= hi:
            raise ScheduleError("schedule_expr", f"{name} {value} is out of range {lo}–{hi}")
        return value
    upper = token.upper()
    if upper in names:
        return names[upper]
    if re.fullmatch(r"\d*L|L?W|\d+W", upper):
        raise ScheduleError("schedule_expr", f"{name} {token!r}: 'L'/'W' (last/nearest weekday) are not supported")
    if names and token.isalpha():
        raise ScheduleError("schedule_expr", f"unknown {name} name {token!r} (use {'/'.join(names)})")
    raise ScheduleError("schedule_expr", f"{name} value {token!r} is not a number")


# ---- once


def _parse_once(text: str, tz: ZoneInfo) -> datetime:
    if "T" not in text.upper() and " " not in text:
        raise ScheduleError("schedule_expr", f"{text!r} needs a date and a time, e.g. 2027-03-28T02:30:00")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(
            "schedule_expr", f"{text!r} is not an ISO 8601 timestamp (e.g. 2027-03-28T02:30:00Z)"
        ) from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ScheduleError("schedule_expr", f"{text!r}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    if value.microsecond:  # never fire before the requested instant
        value = value.replace(microsecond=0) + _SECOND
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    if tz.key in _UTC_KEYS:
        return value.replace(tzinfo=UTC)
    return _resolve_first(value, tz)


# ---- rrule

_FREQS = {
    "YEARLY": YEARLY,
    "MONTHLY": MONTHLY,
    "WEEKLY": WEEKLY,
    "DAILY": DAILY,
    "HOURLY": HOURLY,
    "MINUTELY": MINUTELY,
}
_RRULE_INT_PARTS = {  # part: (smallest magnitude, largest magnitude, may be negative)
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_RRULE_PARTS = frozenset({"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST", *_RRULE_INT_PARTS})
_WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_ICAL_DATETIME = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?")
# 400 Gregorian years = 146097 days; expressed in each frequency's unit.
_CYCLE_UNITS = {YEARLY: 400, MONTHLY: 4800, WEEKLY: 20871, DAILY: 146097, HOURLY: 146097 * 24, MINUTELY: 146097 * 1440}


def _compile_rrule(text: str, tz: ZoneInfo, anchor: datetime | None) -> _RRule:
    rule_value: str | None = None
    dtstart: datetime | None = None
    rdates: list[datetime] = []
    exdates: list[datetime] = []
    for token in text.split():
        if token.upper().startswith("FREQ="):
            name, params, value = "RRULE", [], token
        else:
            head, colon, value = token.partition(":")
            if not colon:
                raise ScheduleError(
                    "schedule_expr", f"cannot read {token!r}: expected lines like RRULE:FREQ=WEEKLY;BYDAY=MO"
                )
            name, *params = head.split(";")
            name = name.upper()
        if name == "RRULE":
            if rule_value is not None:
                raise ScheduleError("schedule_expr", "only one RRULE line is allowed")
            if params:
                raise ScheduleError("schedule_expr", "RRULE takes no parameters")
            rule_value = value
        elif name == "DTSTART":
            if dtstart is not None:
                raise ScheduleError("schedule_expr", "only one DTSTART line is allowed")
            values = _ical_values(value, params, tz, "DTSTART")
            if len(values) != 1:
                raise ScheduleError("schedule_expr", "DTSTART takes exactly one value")
            dtstart = values[0]
        elif name in ("RDATE", "EXDATE"):
            (rdates if name == "RDATE" else exdates).extend(_ical_values(value, params, tz, name))
        elif name == "EXRULE":
            raise ScheduleError("schedule_expr", "EXRULE is not supported (deprecated in RFC 5545); use EXDATE")
        else:
            raise ScheduleError("schedule_expr", f"unknown line {name!r}; expected DTSTART, RRULE, RDATE or EXDATE")
    if rule_value is None:
        raise ScheduleError("schedule_expr", "missing the RRULE (e.g. RRULE:FREQ=WEEKLY;BYDAY=MO)")
    if dtstart is None:
        assert anchor is not None
        dtstart = anchor.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0, fold=0)
    parts = _rrule_parts(rule_value)
    freq = _FREQS[parts["FREQ"]]
    interval = int(parts.get("INTERVAL", "1"))
    until = _rrule_until(parts["UNTIL"], tz) if "UNTIL" in parts else None
    core = ";".join(f"{k}={v}" for k, v in parts.items() if k not in ("COUNT", "UNTIL"))
    try:
        rule = rrulestr(core, dtstart=dtstart)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScheduleError("schedule_expr", f"invalid RRULE: {exc}") from None
    _check_satisfiable(rule, dtstart, freq, interval, parts)
    if "COUNT" in parts:
        until = None
        for until in rule.replace(count=int(parts["COUNT"])):  # noqa: B007 - keep the last one
            pass
    if until is not None:
        rule = rule.replace(until=until)
    spaced = sorted(set(rdates))
    for a, b in zip(spaced, spaced[1:], strict=False):
        if b - a < timedelta(minutes=1):
            raise ScheduleError("schedule_expr", f"RDATE values {a} and {b} are less than a minute apart")
    hours = parts.get("BYHOUR")
    if hours is not None:
        fixed = len(set(hours.split(","))) < 24
    else:
        fixed = not ((freq == HOURLY and interval == 1) or (freq == MINUTELY and interval <= 60))
    step = {
        MINUTELY: timedelta(minutes=interval),
        HOURLY: timedelta(hours=interval),
        DAILY: timedelta(days=interval),
        WEEKLY: timedelta(weeks=interval),
    }.get(freq)
    return _RRule(
        rule=rule,
        dtstart=dtstart,
        until=until,
        rdates=tuple(spaced),
        exdates=tuple(sorted(set(exdates))),
        fixed=fixed,
        step=step,
        parts=tuple(parts.items()),
    )


def _rrule_parts(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for piece in value.split(";"):
        if not piece:
            continue
        key, eq, val = piece.partition("=")
        key, val = key.upper(), val.upper()
        if not eq or not val:
            raise ScheduleError("schedule_expr", f"RRULE part {piece!r} needs a value (KEY=VALUE)")
        if key not in _RRULE_PARTS:
            raise ScheduleError("schedule_expr", f"unknown RRULE part {key!r}")
        if key in parts:
            raise ScheduleError("schedule_expr", f"RRULE part {key} appears twice")
        parts[key] = val
    freq = parts.get("FREQ")
    if freq is None:
        raise ScheduleError("schedule_expr", "RRULE needs FREQ (e.g. FREQ=DAILY)")
    if freq == "SECONDLY":
        raise ScheduleError("schedule_expr", "FREQ=SECONDLY is not supported: a rule may fire at most once a minute")
    if freq not in _FREQS:
        raise ScheduleError("schedule_expr", f"unknown FREQ {freq!r}; expected one of {', '.join(_FREQS)}")
    for key in ("INTERVAL", "COUNT"):
        if key in parts:
            top = MAX_RRULE_COUNT if key == "COUNT" else 1_000_000
            raw = parts[key]
            if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= top:
                raise ScheduleError("schedule_expr", f"{key}={raw} must be an integer between 1 and {top}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ScheduleError("schedule_expr", "COUNT and UNTIL cannot both be given (RFC 5545)")
    for key, (lo, hi, signed) in _RRULE_INT_PARTS.items():
        if key in parts:
            for item in parts[key].split(","):
                if not re.fullmatch(r"[+-]?\d{1,3}" if signed else r"\d{1,3}", item):
                    raise ScheduleError("schedule_expr", f"{key} value {item!r} is not a valid number")
                if not lo <= abs(int(item)) <= hi:
                    span = f"{lo}–{hi} or -{hi}–-{lo}" if signed else f"{lo}–{hi}"
                    raise ScheduleError("schedule_expr", f"{key} {int(item)} is out of range {span}")
    seconds = parts.get("BYSECOND", "").split(",")
    if len(set(seconds)) > 1:
        raise ScheduleError(
            "schedule_expr", f"BYSECOND={parts['BYSECOND']} fires more than once a minute; give a single second"
        )
    for item in parts.get("BYDAY", "").split(",") if "BYDAY" in parts else ():
        match = re.fullmatch(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)", item)
        if not match or (match.group(1) and not 1 <= abs(int(match.group(1))) <= 53):
            raise ScheduleError("schedule_expr", f"BYDAY value {item!r} is not valid (e.g. MO, 1MO, -1FR)")
    if "WKST" in parts and parts["WKST"] not in _WEEKDAY_CODES:
        raise ScheduleError("schedule_expr", f"WKST={parts['WKST']} is not a weekday (MO..SU)")
    return parts


def _rrule_until(raw: str, tz: ZoneInfo) -> datetime:
    match = _ICAL_DATETIME.fullmatch(raw)
    if not match:
        raise ScheduleError("schedule_expr", f"UNTIL={raw} is not a date-time like 20271231T235959Z")
    value = _ical_datetime(match, f"UNTIL={raw}")
    if match.group(4) is None:  # a DATE: the whole day is included
        return value.replace(hour=23, minute=59, second=59)
    if match.group(7):
        return value.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None, fold=0)
    return value


def _ical_values(value: str, params: list[str], tz: ZoneInfo, what: str) -> list[datetime]:
    tzid = None
    for param in params:
        key, _, val = param.partition("=")
        if key.upper() == "TZID":
            tzid = val
        elif key.upper() == "VALUE":
            if val.upper() not in ("DATE", "DATE-TIME"):
                raise ScheduleError("schedule_expr", f"{what};VALUE={val} is not supported")
        else:
            raise ScheduleError("schedule_expr", f"unknown {what} parameter {key!r}")
    if tzid is not None and tzid != tz.key:
        raise ScheduleError(
            "schedule_expr", f"{what} has TZID={tzid} but the task timezone is {tz.key}; set timezone to {tzid!r}"
        )
    out = []
    for item in value.split(","):
        match = _ICAL_DATETIME.fullmatch(item.upper())
        if not match:
            raise ScheduleError(
                "schedule_expr", f"{what} value {item!r} is not a date-time like 20270328T023000 or 20270328T003000Z"
            )
        local = _ical_datetime(match, f"{what} value {item!r}")
        if match.group(7):
            if tzid is not None:
                raise ScheduleError("schedule_expr", f"{what} cannot have both TZID and a Z suffix")
            local = local.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None, fold=0)
        out.append(local)
    return out


def _ical_datetime(match: re.Match[str], what: str) -> datetime:
    numbers = [int(g) for g in match.groups()[:6] if g is not None]
    try:
        value = datetime(*numbers)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ScheduleError("schedule_expr", f"{what} is not a valid date ({exc})") from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ScheduleError("schedule_expr", f"{what}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


def _check_satisfiable(rule: rrule, dtstart: datetime, freq: int, interval: int, parts: dict[str, str]) -> None:
    """Reject rules that never produce a date: dateutil would search until year 9999 on every call.

    Obvious cases get a specific message; the rest are probed near year 9999 (so the probe ends),
    on a DTSTART moved by whole 400-year calendar cycles that are also whole multiples of the
    rule's INTERVAL, i.e. the same calendar and the same phase as the real rule. Sub-daily rules
    step day by day, so their dates are first checked with a cheap YEARLY rule over the same date
    parts (that probe takes milliseconds instead of seconds).
    """
    if "BYMONTHDAY" in parts and "BYMONTH" in parts:
        days = [int(d) for d in parts["BYMONTHDAY"].split(",")]
        months = [int(m) for m in parts["BYMONTH"].split(",")]
        if min(days) > 0 and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
            raise ScheduleError(
                "schedule_expr", f"BYMONTHDAY={parts['BYMONTHDAY']} never occurs in BYMONTH={parts['BYMONTH']}"
            )
    day_parts = [k for k in ("BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYDAY") if k in parts]
    plain_days = not re.search(r"\d", parts.get("BYDAY", ""))  # ordinals mean something else per FREQ
    if freq >= DAILY and day_parts and plain_days and "BYSETPOS" not in parts:
        dates = ";".join(f"{k}={parts[k]}" for k in ("BYMONTH", *day_parts) if k in parts)
        midnight = dtstart.replace(hour=0, minute=0, second=0)
        _probe(rrulestr(f"FREQ=YEARLY;{dates}", dtstart=midnight), midnight, YEARLY, 1)
    _probe(rule, dtstart, freq, interval)


def _probe(rule: rrule, dtstart: datetime, freq: int, interval: int) -> None:
    cycles = interval // gcd(_CYCLE_UNITS[freq], interval)  # 400-year cycles per shift
    shifts = max(0, (9999 - 400 - dtstart.year) // (400 * cycles))
    probe = rule.replace(dtstart=dtstart + timedelta(days=146097 * cycles * shifts))
    try:
        first = next(iter(probe), None)
    except (ValueError, TypeError) as exc:
        raise ScheduleError("schedule_expr", f"invalid RRULE: {exc}") from None
    if first is None:
        raise ScheduleError("schedule_expr", "the RRULE never produces a date; check its BY* parts")


_WEEKDAY_NAMES = {
    "MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday", "SA": "Saturday",
    "SU": "Sunday",
}  # fmt: skip
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_FREQ_UNITS = {YEARLY: "year", MONTHLY: "month", WEEKLY: "week", DAILY: "day", HOURLY: "hour", MINUTELY: "minute"}


def _ordinal(n: int) -> str:
    if n == -1:
        return "last"
    if n < 0:
        return f"{_ordinal(-n)} to last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _describe_rrule(rule: _RRule, zone: str) -> str:
    """A short, honest English rendering of the rule (dateutil has none)."""
    parts = dict(rule.parts)
    freq = _FREQS[parts["FREQ"]]
    interval = int(parts.get("INTERVAL", "1"))
    unit = _FREQ_UNITS[freq]
    start = rule.dtstart
    text = f"Every {unit}" if interval == 1 else f"Every {interval} {unit}s"
    if "BYMONTH" in parts:
        text += " in " + ", ".join(_MONTH_NAMES[int(m) - 1] for m in parts["BYMONTH"].split(","))
    if "BYDAY" in parts:
        days = []
        for item in parts["BYDAY"].split(","):
            nth, code = item[:-2], item[-2:]
            days.append(f"the {_ordinal(int(nth))} {_WEEKDAY_NAMES[code]}" if nth else _WEEKDAY_NAMES[code])
        text += " on " + ", ".join(days)
    if "BYMONTHDAY" in parts:
        month_days = [int(d) for d in parts["BYMONTHDAY"].split(",")]
        positive = [str(d) for d in month_days if d > 0]
        labels = [f"day {', '.join(positive)}"] if positive else []
        labels += [f"the {_ordinal(-d)} day" if d < -1 else "the last day" for d in month_days if d < 0]
        text += " on " + ", ".join(labels)
    elif not any(k in parts for k in ("BYDAY", "BYYEARDAY", "BYWEEKNO")):
        if freq == WEEKLY:
            text += f" on {_WEEKDAY_NAMES[_WEEKDAY_CODES[start.weekday()]]}"
        elif freq == MONTHLY:
            text += f" on day {start.day}"
        elif freq == YEARLY and "BYMONTH" not in parts:
            text += f" on {_MONTH_NAMES[start.month - 1]} {start.day}"
        elif freq == YEARLY:
            text += f" on day {start.day}"
    for key in ("BYYEARDAY", "BYWEEKNO", "BYSETPOS"):
        if key in parts:
            text += f" ({key}={parts[key]})"

    def ints(key: str, default: int) -> list[int]:
        return sorted({int(v) for v in parts[key].split(",")}) if key in parts else [default]

    second = ints("BYSECOND", start.second)[0]
    if freq <= DAILY:
        times = [(h, m) for h in ints("BYHOUR", start.hour) for m in ints("BYMINUTE", start.minute)]
        labels = [f"{h:02d}:{m:02d}" + (f":{second:02d}" if second else "") for h, m in times]
        text += " at " + (", ".join(labels) if len(labels) <= 4 else f"{len(labels)} times a day")
    else:
        if freq == HOURLY:
            text += " at minute " + ", ".join(str(m) for m in ints("BYMINUTE", start.minute))
        elif "BYMINUTE" in parts:
            text += " at minute " + parts["BYMINUTE"]
        if second:
            text += f", second {second}"
        if "BYHOUR" in parts:
            text += " during hour " + ", ".join(str(h) for h in ints("BYHOUR", 0))
    text += f" ({zone})"
    if "COUNT" in parts:
        text += f", {parts['COUNT']} time" + ("s" if parts["COUNT"] != "1" else "")
    elif rule.until is not None:
        text += f", until {rule.until.isoformat()}"
    if rule.rdates:
        text += f", plus {len(rule.rdates)} extra date" + ("s" if len(rule.rdates) > 1 else "")
    if rule.exdates:
        text += f", except {len(rule.exdates)} date" + ("s" if len(rule.exdates) > 1 else "")
    text += f", starting {start.isoformat()}"
    return text


# --------------------------------------------------------------------------- wall clock -> UTC


def _offset(moment: datetime) -> timedelta:
    return moment.utcoffset() or _ZERO


def _resolve_first(local: datetime, tz: ZoneInfo) -> datetime:
    """Fixed-hour policy: the UTC instant of naive wall time ``local``.

    Repeated time -> its first occurrence; time inside a gap -> the first instant after the gap.
    """
    before = _offset(local.replace(tzinfo=tz, fold=0))  # zoneinfo: fold=0 uses the earlier offset
    after = _offset(local.replace(tzinfo=tz, fold=1))
    first = (local - before).replace(tzinfo=UTC)
    if before >= after:  # ordinary time (equal) or a repeated time (first copy has the larger offset)
        return first
    transition = _next_transition(tz, (local - after).replace(tzinfo=UTC), first)
    return first if transition is None else transition


def _first_fixed(iter_from: Callable[[datetime], Iterator[datetime]], tz: ZoneInfo, after: datetime) -> datetime | None:
    """First fixed-hour fire strictly after ``after``.

    Wall times map to instants monotonically (gaps collapse, repeats take the first copy), and the
    wall time of ``after`` maps to an instant <= ``after``; so scan wall times from there on.
    """
    start = after.astimezone(tz).replace(tzinfo=None, microsecond=0, fold=0)
    for examined, local in enumerate(iter_from(start)):
        instant = _resolve_first(local, tz)
        if instant > after:
            return instant
        if examined > _LOOP_GUARD:
            break
    return None


def _first_elapsed(
    iter_from: Callable[[datetime], Iterator[datetime]], tz: ZoneInfo, after: datetime
) -> datetime | None:
    """First elapsed-time fire strictly after ``after``: an instant whose wall time matches.

    Between two offset transitions wall time is instant + a constant offset, so the first matching
    wall time gives the answer unless a transition comes first; then continue from the transition
    with the new offset. Gaps are never matched; both copies of a repeated hour are.
    """
    offset = _offset(after.astimezone(tz))
    start = (after + offset).replace(tzinfo=None, microsecond=0)
    since = after
    for _ in range(_LOOP_GUARD):
        local = next(iter_from(start), None)
        if local is None:
            return None
        candidate = (local - offset).replace(tzinfo=UTC)
        transition = _next_transition(tz, since, candidate)
        if transition is None:
            return candidate
        offset = _offset(transition.astimezone(tz))
        start = (transition + offset).replace(tzinfo=None) - _SECOND
        since = transition
    return None


def _next_transition(tz: ZoneInfo, after: datetime, limit: datetime) -> datetime | None:
    """First UTC-offset change in (after, limit], or None."""
    for year in range(after.year, min(limit.year, 9998) + 1):
        changes = _year_transitions(tz, year)
        index = bisect.bisect_right(changes, after)
        if index < len(changes):
            return changes[index] if changes[index] <= limit else None
    return None


_SAMPLE = timedelta(hours=3)


@functools.lru_cache(maxsize=1024)
def _year_transitions(tz: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """Instants in [year, year+1) UTC where the zone's UTC offset changes, to the second.

    zoneinfo does not expose its transition table, so sample every 3 h and bisect each change.
    """
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    current = _offset(moment.astimezone(tz))
    found = []
    while moment < end:
        probe = min(moment + _SAMPLE, end)
        offset = _offset(probe.astimezone(tz))
        if offset != current:
            lo, hi = int(moment.timestamp()), int(probe.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(datetime.fromtimestamp(mid, UTC).astimezone(tz)) == current:
                    lo = mid
                else:
                    hi = mid
            found.append(datetime.fromtimestamp(hi, UTC))
            current = offset
        moment = probe
    return tuple(found)


# --------------------------------------------------------------------------- missed fires


def _due_fires(schedule: Schedule, first: datetime, now: datetime, keep: int) -> tuple[list[datetime], bool]:
    """The last ``keep`` fires in [first, now] (``first`` counts as a fire) and whether more exist.

    Scans forward a little; if that does not reach ``now``, looks back from ``now`` over windows
    growing 4x (fires are at least a minute apart, so ``keep`` minutes is the smallest useful one).
    """
    fires: deque[datetime] = deque(maxlen=keep)
    budget = 4 * keep
    fire: datetime | None = first
    while fire is not None and fire <= now:
        fires.append(fire)
        budget -= 1
        if budget == 0:
            break
        fire = next_fire(schedule, fire)
    else:
        return list(fires), budget < 3 * keep
    scanned_to = fires[-1]
    span = timedelta(minutes=keep)
    while True:
        lo = now - span
        if lo <= scanned_to:  # the window reaches what was scanned: finish the forward scan
            fire = next_fire(schedule, scanned_to)
            while fire is not None and fire <= now:
                fires.append(fire)
                fire = next_fire(schedule, fire)
            return list(fires), True
        tail: deque[datetime] = deque(maxlen=keep)
        seen = 0
        fire = next_fire(schedule, lo)
        while fire is not None and fire <= now:
            tail.append(fire)
            seen += 1
            fire = next_fire(schedule, fire)
        if seen >= keep:
            return list(tail), True
        span *= 4


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
