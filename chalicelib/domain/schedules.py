"""Schedules: parse and validate a task's schedule, and compute its fire instants.

Four kinds (API.md "Schedules"): ``cron`` (5 fields, parsed by cronsim), ``rrule`` (RFC 5545,
compiled by dateutil), ``once`` (an ISO 8601 timestamp) and ``event`` (a name pattern, never
scheduled). Matches are *naive local wall-clock* times, found from the libraries' compiled rules
with bounded work (every loop charges a ``Work`` budget; see _Walk and _CronRule.iter_from); this
module maps wall-clock times to UTC instants with the project's DST policy, because neither
library implements that policy for every schedule shape:

* fixed-hour schedules (cron hour field not every hour, rrule with BYHOUR or a daily-or-slower
  frequency, once): a wall time inside a spring-forward gap fires once at the first instant after
  the gap; a repeated wall time fires once, at its first occurrence;
* every-hour schedules (cron hour field ``*``, hourly/minutely rrules without BYHOUR) follow real
  elapsed time: they fire in both copies of a repeated hour and never inside a gap.

Every function is pure: the caller passes ``now``/``after``; nothing here reads the clock.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import hashlib
import heapq
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from math import gcd
from typing import Any, TypeAlias, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil.rrule import (
    DAILY,
    HOURLY,
    MINUTELY,
    MONTHLY,
    WEEKLY,
    YEARLY,
    _iterinfo,  # dateutil's per-year calendar masks; see _Walk
    rrule,
    rrulestr,
)

__all__ = [
    "KINDS",
    "MISFIRE_POLICIES",
    "MissedPlan",
    "Schedule",
    "ScheduleBudgetError",
    "ScheduleError",
    "Work",
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
# Work budgets, in steps: an occurrence or a wall-clock candidate is 1, a year or a day skipped is 3,
# a period of a YEARLY/MONTHLY/WEEKLY rule 10, a year's day mask a step per day (a step is about
# 0.2-1 µs of CPU on a quiet core). One next fire may take WORK_BUDGET; compiling a rule (COUNT,
# the never-fires check) PARSE_BUDGET. bench/adversarial.py reports the most any case took.
WORK_BUDGET = 250_000
PARSE_BUDGET = 500_000
# Fire instants are computed inside [_FIRST, _LAST] (UTC): a day inside datetime's range at each
# end, so a wall-clock time, an offset or the jitter can never push arithmetic out of it.
_FIRST = datetime(1, 1, 2, tzinfo=UTC)
_LAST = datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)
_LAST_WALL = datetime(9999, 12, 31)  # wall-clock candidates from here on are past the calendar
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


class ScheduleBudgetError(ScheduleError):
    """Computing a fire would take more than its work budget: the rule is refused (400) or, for a
    stored task, shown to its agent as `schedule_error`."""

    def __init__(self, message: str) -> None:
        super().__init__("schedule_expr", message)


class Work:
    """A step counter with a limit: every loop in the engine charges it, so no input can make one
    computation take longer than `limit` steps. Tests and the bench read `spent`."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int = WORK_BUDGET) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, steps: int = 1) -> None:
        self.spent += steps
        if self.spent > self.limit:
            raise ScheduleBudgetError(
                f"computing the next fire takes more than {self.limit:,} steps; "
                "use a rule whose dates are closer together (fewer BY* constraints or a smaller INTERVAL)"
            )


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class _CronRule:
    """A compiled cron expression: cronsim's parsed field sets, reused for every query.

    cronsim parses and validates the five fields; matches are then found from its sets (see
    iter_from), which keeps every query's cost bounded. The sets are interned: most expressions
    share most fields, which keeps 10,000 cached expressions under 10 MB.
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

    times: tuple[time, ...] = field(default=(), repr=False)  # hours x minutes, sorted

    def iter_from(self, start: datetime, work: Work | None = None) -> Iterator[datetime]:
        """Naive wall-clock matches strictly after naive ``start``, as cronsim finds them, at a
        bounded cost: a year's matching days are one byte mask, and a year's mask depends only
        on whether it is a leap year and on which weekday it starts (14 masks per expression),
        so a sparse expression (``0 0 29 2 MON``) skips its empty years in one step each."""
        work = work if work is not None else Work()
        times = self.times
        day = start.toordinal()
        while day <= _MAX_ORDINAL:
            year = date.fromordinal(day).year
            first, size = _year_span(year)
            work.spend(3)
            found = self.mask(year, work).find(1, day - first, size)
            if found < 0:
                day = first + size
                continue
            day = first + found
            skip = bisect.bisect_right(times, start.time()) if day == start.toordinal() else 0
            when = date.fromordinal(day)
            for moment in times[skip:]:
                work.spend()
                yield datetime.combine(when, moment)
            day += 1

    def mask(self, year: int, work: Work) -> bytes:
        """1 for each day of ``year`` whose month, day of month and day of week match (Vixie cron:
        day of month OR day of week when both are restricted, cronsim's ``day_and`` otherwise).
        Shared by every expression with the same day fields (a bounded cache)."""
        leap, weekday, _, _ = _year_kind(year)
        key = (self.months, self.days, self.weekdays, self.day_and, leap, weekday)
        found = _CRON_MASKS.get(key)
        if found is None:
            months, days, weekdays = _calendar_bytes(leap, weekday)
            size = len(months)
            month_ok = int.from_bytes(months.translate(_allowed(self.months)), "big")
            dom_ok = int.from_bytes(days.translate(_allowed(self.days)), "big")
            cron_days = {d for d in range(1, 8) if d in self.weekdays or d % 7 in self.weekdays}
            dow_ok = int.from_bytes(weekdays.translate(_allowed(cron_days)), "big")
            day_ok = dom_ok & dow_ok if self.day_and else dom_ok | dow_ok
            work.spend(size // 8)
            if len(_CRON_MASKS) >= 4096:
                _CRON_MASKS.clear()
            found = _CRON_MASKS[key] = (month_ok & day_ok).to_bytes(size, "big")
        return found


def _allowed(values: Any, offset: int = 0) -> bytes:
    """A bytes.translate table: 1 for each value (plus ``offset``), 0 for every other byte."""
    table = bytearray(256)
    for v in values:
        if isinstance(v, int):
            table[v + offset] = 1
    return bytes(table)


@functools.lru_cache(maxsize=14)
def _calendar_bytes(leap: bool, weekday: int) -> tuple[bytes, bytes, bytes]:
    """Month, day of month and cron day of week (1 = Monday ... 7 = Sunday) of each day of a year
    that is (or is not) a leap year and starts on ``weekday``: all a cron day match needs."""
    lengths = (31, 28 + leap, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    months = bytes(m for m, length in enumerate(lengths, 1) for _ in range(length))
    days = bytes(d for length in lengths for d in range(1, length + 1))
    weekdays = bytes((weekday + i) % 7 + 1 for i in range(len(days)))
    return months, days, weekdays


_CRON_MASKS: dict[tuple[Any, ...], bytes] = {}


@dataclass(frozen=True, eq=False)
class _RRule:
    """A compiled RFC 5545 rule over naive local datetimes (COUNT already turned into UNTIL)."""

    rule: rrule
    dtstart: datetime
    until: datetime | None  # naive local, inclusive
    rdates: tuple[datetime, ...]
    exdates: tuple[datetime, ...]
    fixed: bool
    parts: tuple[tuple[str, str], ...]  # validated RRULE parts, for describe()
    walk: _Walk = field(repr=False)

    def iter_from(self, start: datetime, work: Work | None = None) -> Iterator[datetime]:
        """Naive occurrences strictly after naive ``start``, at a cost bounded by ``work``."""
        occurrences = self.walk.after(start, work if work is not None else Work(), self.until)
        if not self.rdates and not self.exdates:
            return occurrences
        return _merged(occurrences, self.rdates[bisect.bisect_right(self.rdates, start) :], set(self.exdates))


def _merged(rule: Iterator[datetime], rdates: tuple[datetime, ...], exdates: set[datetime]) -> Iterator[datetime]:
    """RFC 5545 (as dateutil's rruleset): RDATEs join the rule's dates, EXDATEs remove from both."""
    last = None
    for value in heapq.merge(rule, rdates):
        if value != last and value not in exdates:
            yield value
        last = value


_MAX_ORDINAL = date(9999, 12, 31).toordinal()
_DAY = timedelta(days=1)


class _Walk:
    """dateutil's RRULE semantics, computed from the period that holds ``after``.

    dateutil's own iterator always starts at DTSTART and cannot stop inside a run of periods with
    no occurrence, so its cost grows with the distance to ``after`` (a rule from 1990 asked about
    year 8000 walks 6,000 years) and with a period's size (a YEARLY rule with every BYHOUR and
    BYMINUTE builds 527,040 candidates a year). This walk keeps dateutil's compiled rule (its BY*
    sets and the defaults it takes from DTSTART) and its calendar masks (``_iterinfo``: week
    numbers, nth weekdays, month and year days), so which days pass is dateutil's own decision,
    but it
    * marks the days of a year that pass the date parts once per year of the 400-year Gregorian
      cycle (the calendar repeats, so year 2427 reuses 2027's marks),
    * jumps straight to the period (year, month, week, day, or interval lattice point) that holds
      ``after``, keeping the INTERVAL phase counted from DTSTART, and
    * crosses a day's times only for the days that pass, so every step is small and charged.
    The emitted sequence equals dateutil's (tests/unit/test_schedule_bounds.py compares them).
    """

    def __init__(self, rule: rrule) -> None:
        r: Any = rule
        self.rule = rule
        self.freq: int = r._freq
        self.interval: int = r._interval
        self.dtstart: datetime = r._dtstart
        self.setpos: tuple[int, ...] | None = r._bysetpos
        self.hours: tuple[int, ...] | None = tuple(r._byhour) if r._byhour else None
        self.minutes: tuple[int, ...] | None = tuple(r._byminute) if r._byminute else None
        self.seconds: tuple[int, ...] = tuple(r._bysecond)
        self.times: tuple[time, ...] = tuple(r._timeset) if self.freq < HOURLY else ()
        if self.freq == DAILY and self.setpos:  # a day is the whole period: the positions pick times
            self.times = tuple(t for _, t in _pick([0], self.times, self.setpos))
        self.hour_set = frozenset(self.hours or ())
        self.minute_set = frozenset(self.minutes or ())
        self.masks: dict[tuple[bool, int, bool, bool], bytes] = {}
        self.lattice: dict[int, list[time]] = {}
        self.good: list[int] | None = None  # sub-daily: phases of the day cycle that have times

    # ---- which days pass the date parts

    def mask(self, year: int, work: Work) -> bytes:
        """One byte per day of ``year`` (plus 7 of the next for WEEKLY): 1 where the date parts pass.

        Which days pass depends only on the year's length and first weekday and on whether the
        years around it are leap years (week numbers look at both), so at most 56 masks are built.
        """
        key = _year_kind(year)
        found = self.masks.get(key)
        if found is None:
            found = self._build(_YEAR_OF_KIND[key])  # a year with the same calendar as ``year``
            work.spend(len(found))
            self.masks[key] = found
        return found

    def _build(self, year: int) -> bytes:
        """dateutil's day filter (rrule._iter) for a whole year at once: each BY* part's pass/fail
        bytes from dateutil's masks, ANDed as big integers (every byte is 0 or 1)."""
        r: Any = self.rule
        ii = _iterinfo(r)
        ii.rebuild(year, 1)
        size = ii.yearlen + (7 if self.freq == WEEKLY else 0)
        passes: list[bytes] = []

        if r._bymonth:
            passes.append(bytes(ii.mmask[:size]).translate(_allowed(r._bymonth)))
        if r._byweekno:
            passes.append(bytes(ii.wnomask[:size]))
        if r._byweekday:
            passes.append(bytes(ii.wdaymask[:size]).translate(_allowed(r._byweekday)))
        if r._bynweekday:  # nth weekdays: YEARLY over the year (or its BYMONTHs), MONTHLY month by month
            nth = bytearray(size)
            for month in range(1, 13) if self.freq == MONTHLY else (1,):
                ii.rebuild(year, month)
                for i, hit in enumerate(ii.nwdaymask):
                    if hit:
                        nth[i] = 1
            passes.append(bytes(nth))
        if r._bymonthday or r._bynmonthday:
            days = bytes(ii.mdaymask[:size]).translate(_allowed(r._bymonthday))
            last = bytes(v + 32 for v in ii.nmdaymask[:size]).translate(_allowed(r._bynmonthday, 32))
            passes.append((int.from_bytes(days, "big") | int.from_bytes(last, "big")).to_bytes(size, "big"))
        if r._byyearday:
            yearly, ylen, nlen = r._byyearday, ii.yearlen, ii.nextyearlen
            passes.append(
                bytes(
                    (i + 1 in yearly or -ylen + i in yearly)
                    if i < ylen
                    else (i + 1 - ylen in yearly or -nlen + i - ylen in yearly)
                    for i in range(size)
                )
            )
        mask = int.from_bytes(b"\x01" * size, "big")
        for part in passes:
            mask &= int.from_bytes(part, "big")
        return mask.to_bytes(size, "big")

    # ---- occurrences

    def after(
        self, start: datetime, work: Work, until: datetime | None, stop: datetime | None = None
    ) -> Iterator[datetime]:
        """Occurrences strictly after naive ``start`` (and not before DTSTART, not after ``until``),
        in order. ``stop``: give up on periods that begin after it (the never-fires check)."""
        floor = max(start.replace(microsecond=0), self.dtstart - _SECOND)
        stop_ordinal = min(_MAX_ORDINAL, stop.toordinal()) if stop is not None else _MAX_ORDINAL
        if self.freq >= HOURLY:
            source = self._sub_daily(floor, work, stop_ordinal)
        elif self.freq == DAILY:
            source = self._daily(floor, work, stop_ordinal)
        else:
            source = self._periods(floor, work, stop_ordinal)
        for value in source:
            if until is not None and value > until:
                return
            work.spend()
            yield value

    def _periods(self, floor: datetime, work: Work, stop_ordinal: int) -> Iterator[datetime]:
        """YEARLY, MONTHLY and WEEKLY: whole periods of days (BYSETPOS picks within each)."""
        start, n, freq = self.dtstart.date(), self.interval, self.freq
        week0 = 0
        if freq == YEARLY:
            k = max(0, (floor.year - start.year) // n)
        elif freq == MONTHLY:
            k = max(0, (floor.year * 12 + floor.month - start.year * 12 - start.month) // n)
        else:
            # dateutil's first week runs from DTSTART to the day before the next WKST; later weeks
            # start on WKST, INTERVAL weeks apart
            week0 = start.toordinal() - (start.weekday() - cast(Any, self.rule)._wkst) % 7
            k = max(0, (floor.toordinal() - week0) // (7 * n))
        while True:
            work.spend(10)
            if freq == YEARLY:
                year = start.year + k * n
                if year > 9999:
                    return
                first = date(year, 1, 1).toordinal()
                lo, hi = 0, 365 + calendar.isleap(year)
            elif freq == MONTHLY:
                year, month0 = divmod(start.year * 12 + start.month - 1 + k * n, 12)
                if year > 9999:
                    return
                first = date(year, 1, 1).toordinal()
                lo = date(year, month0 + 1, 1).toordinal() - first
                hi = lo + calendar.monthrange(year, month0 + 1)[1]
            else:
                begin = start.toordinal() if k == 0 else week0 + 7 * n * k
                if begin > _MAX_ORDINAL:
                    return
                year = date.fromordinal(begin).year
                first = date(year, 1, 1).toordinal()
                lo = begin - first
                hi = week0 + 7 * n * k + 7 - first
            if first + lo > stop_ordinal:
                return
            mask = self.mask(year, work)
            work.spend((hi - lo) // 8 + 1)
            days = [i for i in range(lo, hi) if mask[i]]
            if days:
                if self.setpos:
                    for i, moment in _pick(days, self.times, self.setpos):
                        if first + i > _MAX_ORDINAL:
                            return
                        value = datetime.combine(date.fromordinal(first + i), moment)
                        if value > floor:
                            yield value
                else:
                    begin_day = floor.toordinal() - first
                    for i in days[bisect.bisect_left(days, begin_day) :]:
                        if first + i > _MAX_ORDINAL:
                            return
                        yield from self._day(first + i, self.times, floor, work)
                k += 1
                continue
            # No day of this period passes: go straight to the period of the next day that does.
            day = self._next_day(first + hi, work, stop_ordinal)
            if day is None:
                return
            if freq == YEARLY:
                ahead = -(-(date.fromordinal(day).year - start.year) // n)
            elif freq == MONTHLY:
                when = date.fromordinal(day)
                ahead = -(-(when.year * 12 + when.month - start.year * 12 - start.month) // n)
            else:
                ahead = (day - week0) // (7 * n)
            k = max(k + 1, ahead)

    def _next_day(self, ordinal: int, work: Work, stop_ordinal: int) -> int | None:
        """The first day from ``ordinal`` on whose date parts pass, or None (calendar or stop)."""
        while ordinal <= min(stop_ordinal, _MAX_ORDINAL):
            work.spend(3)
            year = date.fromordinal(ordinal).year
            first, size = _year_span(year)
            found = self.mask(year, work).find(1, ordinal - first, size)
            if found >= 0:
                return first + found
            ordinal = first + size
        return None

    def _daily(self, floor: datetime, work: Work, stop_ordinal: int) -> Iterator[datetime]:
        n, origin = self.interval, self.dtstart.toordinal()
        day = max(origin, floor.toordinal())
        day = origin + -(-(day - origin) // n) * n  # the first day on the INTERVAL lattice
        while day <= min(stop_ordinal, _MAX_ORDINAL):
            year = date.fromordinal(day).year
            first, size = _year_span(year)
            end = first + size
            mask = self.mask(year, work)
            while day < end:
                work.spend(3)
                found = mask.find(1, day - first, end - first)
                if found < 0:  # none left this year: the first lattice day of the next
                    day += -(-(end - day) // n) * n
                    break
                if first + found != day:  # to the first lattice day on or after it
                    day += -(-(first + found - day) // n) * n
                    continue
                yield from self._day(day, self.times, floor, work)
                day += n

    def _sub_daily(self, floor: datetime, work: Work, stop_ordinal: int) -> Iterator[datetime]:
        """HOURLY and MINUTELY: every day is a candidate; the times are the INTERVAL lattice
        (counted from DTSTART) that BYHOUR/BYMINUTE keep, BYSETPOS picking within each period."""
        unit = 24 if self.freq == HOURLY else 1440
        origin = self.dtstart.toordinal() * unit + (
            self.dtstart.hour if self.freq == HOURLY else self.dtstart.hour * 60 + self.dtstart.minute
        )
        n = self.interval
        # A day's times depend on its residue, which repeats every `cycle` days: list the phases
        # of the cycle that have times at all (none: the rule never fires), and skip the others.
        cycle = n // gcd(n, unit)
        good = None
        if cycle <= 4096:
            if self.good is None:
                self.good = [j for j in range(cycle) if self._lattice_times((origin - j * unit) % n, unit, work)]
            good = self.good
            if not good:
                return
        day = max(self.dtstart.toordinal(), floor.toordinal())
        while day <= min(stop_ordinal, _MAX_ORDINAL):
            year = date.fromordinal(day).year
            first, size = _year_span(year)
            end = first + size
            mask = self.mask(year, work)
            while day < end:
                work.spend(3)
                found = mask.find(1, day - first, end - first)
                if found < 0:
                    day = end
                    break
                day = first + found
                if good is not None:
                    phase = day % cycle
                    at = bisect.bisect_left(good, phase)
                    ahead = good[at] - phase if at < len(good) else cycle - phase + good[0]
                    if ahead:
                        day += ahead
                        continue
                residue = (origin - day * unit) % n  # today's lattice points: residue + k*INTERVAL
                if residue >= unit:  # none today: go to the next lattice point's day
                    day += residue // unit
                    continue
                times = self._lattice_times(residue, unit, work)
                if times:
                    yield from self._day(day, times, floor, work)
                day += 1

    def _lattice_times(self, residue: int, unit: int, work: Work) -> list[time]:
        """A sub-daily rule's times on a day whose lattice points are the hours (unit 24) or
        minutes (unit 1440) x with x = residue (mod INTERVAL). Cached: a day's times depend only
        on the residue, and the residues of successive days repeat."""
        found = self.lattice.get(residue)
        if found is not None:
            return found
        n, seconds, hours, minutes = self.interval, self.seconds, self.hours, self.minutes
        out: list[time] = []
        if unit == 24:
            candidates = (
                [h for h in hours if h % n == residue % n]
                if hours and len(hours) < 24 // n + 1
                else [h for h in range(residue, 24, n) if hours is None or h in self.hour_set]
            )
            work.spend(24 // n + 1 + len(candidates))
            for h in candidates:
                period = [time(h, m, s) for m in minutes or (self.dtstart.minute,) for s in seconds]
                out += [t for _, t in _pick([0], period, self.setpos)] if self.setpos else period
        else:
            pairs = len(hours or range(24)) * len(minutes or range(60))
            if pairs <= 1440 // n + 1:
                points = [
                    h * 60 + m
                    for h in hours or range(24)
                    for m in minutes or range(60)
                    if (h * 60 + m - residue) % n == 0
                ]
                work.spend(pairs)
            else:
                points = [
                    x
                    for x in range(residue, 1440, n)
                    if (hours is None or x // 60 in self.hour_set) and (minutes is None or x % 60 in self.minute_set)
                ]
                work.spend(1440 // n + 1)
            for x in points:
                period = [time(x // 60, x % 60, s) for s in seconds]
                out += [t for _, t in _pick([0], period, self.setpos)] if self.setpos else period
        if len(self.lattice) >= 4096:
            self.lattice.clear()
        self.lattice[residue] = out
        return out

    @staticmethod
    def _day(ordinal: int, times: tuple[time, ...] | list[time], floor: datetime, work: Work) -> Iterator[datetime]:
        day = date.fromordinal(ordinal)
        skip = 0
        if ordinal == floor.toordinal():
            skip = bisect.bisect_right(times, floor.time())
        elif ordinal < floor.toordinal():
            return
        work.spend()
        for moment in times[skip:]:
            yield datetime.combine(day, moment)


@functools.lru_cache(maxsize=10_000)
def _year_span(year: int) -> tuple[int, int]:
    """The ordinal of the year's first day and its number of days."""
    return date(year, 1, 1).toordinal(), 365 + calendar.isleap(year)


@functools.lru_cache(maxsize=10_000)  # every year of the calendar: about 1 MB
def _year_kind(year: int) -> tuple[bool, int, bool, bool]:
    """Everything dateutil's day masks read from a year: leap or not, the weekday it starts on,
    and whether the years before and after it are leap years."""
    return calendar.isleap(year), date(year, 1, 1).weekday(), calendar.isleap(year - 1), calendar.isleap(year + 1)


_YEAR_OF_KIND = {_year_kind(y): y for y in range(2399, 1999, -1)}  # every kind occurs in 400 years


def _pick(days: list[int], times: tuple[time, ...] | list[time], setpos: tuple[int, ...]) -> list[tuple[int, time]]:
    """BYSETPOS as dateutil applies it: position p of a period's (day, time) combinations."""
    out: set[tuple[int, time]] = set()
    for pos in setpos:
        day_at, time_at = divmod(pos if pos < 0 else pos - 1, len(times))
        try:
            out.add((days[day_at], times[time_at]))
        except IndexError:
            pass
    return sorted(out)


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
    key = (kind, expr, timezone, anchor_key, jitter_seconds, jitter_seed, starts, ends)
    refused = _REFUSED.get(key)
    if refused is not None:  # a refusal can cost a whole parse budget: do not pay it twice
        raise refused.with_traceback(None)
    try:
        schedule = _parse_cached(*key)
    except ScheduleError as e:
        if len(_REFUSED) >= 4096:
            _REFUSED.clear()
        _REFUSED[key] = e
        raise
    if kind == "once" and check_past:
        instant = schedule.rule
        assert isinstance(instant, datetime)
        if instant < now - ONCE_PAST_TOLERANCE:
            raise ScheduleError(
                "schedule_expr", f"{schedule.expr} ({_z(instant)}) is in the past; a once time may be at most 60 s ago"
            )
    return schedule


_REFUSED: dict[tuple[Any, ...], ScheduleError] = {}


def next_fire(schedule: Schedule, after: datetime, *, work: Work | None = None) -> datetime | None:
    """First fire instant strictly after ``after`` (UTC, whole seconds), with jitter and bounds.

    None when the schedule is exhausted (once fired, COUNT/UNTIL, ends_at), of kind event, or when
    the calendar ends first (fires are computed from 0001-01-02 to 9999-12-30 UTC). At most
    ``work.limit`` steps (default WORK_BUDGET); more raises ScheduleBudgetError.
    """
    _require_aware(after, "after")
    rule = schedule.rule
    if rule is None:
        return None
    work = work if work is not None else Work()
    try:
        lo = after.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 UTC
        if after.year > 5000:
            return None
        lo = _FIRST
    if lo >= _LAST:
        return None
    lo = max(lo, _FIRST)  # before the jitter, which moves it at most an hour back
    jitter = schedule.jitter_offset
    if jitter:
        lo -= timedelta(seconds=jitter)  # base + jitter > after  <=>  base > after - jitter
    if schedule.starts_at is not None and schedule.starts_at > _FIRST:
        floor = schedule.starts_at - timedelta(seconds=jitter) - _MICROSECOND
        if floor > lo:
            lo = floor
    if lo >= _LAST:
        return None
    lo = max(lo, _FIRST - _SECOND)
    if isinstance(rule, datetime):
        base: datetime | None = rule if rule > lo else None
    else:
        iter_from = functools.partial(rule.iter_from, work=work)
        if schedule.utc:
            local = next(iter_from(lo.replace(tzinfo=None, microsecond=0)), None)
            base = None if local is None or local >= _LAST_WALL else local.replace(tzinfo=UTC)
        elif rule.fixed:
            base = _first_fixed(iter_from, schedule.tz, lo, work)
        else:
            base = _first_elapsed(iter_from, schedule.tz, lo, work)
    if base is None:
        return None
    fire = base + timedelta(seconds=jitter) if jitter else base
    if fire > _LAST or (schedule.ends_at is not None and fire > schedule.ends_at):
        return None
    return fire


def preview(schedule: Schedule, after: datetime, count: int, *, work: Work | None = None) -> list[datetime]:
    """The next ``count`` (1-100) fire instants strictly after ``after``; fewer when exhausted or
    when the calendar ends. Each fire has its own WORK_BUDGET; ``work`` (optional) adds up the
    steps of all of them (for tests and the bench)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW:
        raise ScheduleError("count", f"must be an integer between 1 and {MAX_PREVIEW}")
    out: list[datetime] = []
    cursor = after
    while len(out) < count:
        step = Work()
        try:
            fire = next_fire(schedule, cursor, work=step)
        finally:
            if work is not None:
                work.spent += step.spent
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
        # Loaded here: only previews describe a schedule, and the tick never does (cold start).
        from cron_descriptor import FormatError, MissingFieldError, WrongArgumentError, get_description

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
    _CRON_MASKS.clear()
    _REFUSED.clear()


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
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 UTC
        raise ScheduleError(name, "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z") from None


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
        times=tuple(time(h, m) for h in sorted(template.hours) for m in sorted(template.minutes)),
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
    walk = _Walk(rule)
    _check_satisfiable(walk, dtstart, freq, interval, parts)
    if "COUNT" in parts:
        # WEEKLY with BYSETPOS: dateutil's first week runs from DTSTART, not WKST, so is not like the others
        span = None if freq == WEEKLY and "BYSETPOS" in parts else _period(dtstart, freq, interval)
        until = _nth(walk, int(parts["COUNT"]), span)
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
    return _RRule(
        rule=rule,
        dtstart=dtstart,
        until=until,
        rdates=tuple(spaced),
        exdates=tuple(sorted(set(exdates))),
        fixed=fixed,
        parts=tuple(parts.items()),
        walk=walk,
    )


def _nth(walk: _Walk, count: int, span: timedelta | None) -> datetime | None:
    """The COUNT-th occurrence (the rule's last), or None when the calendar ends before it.

    A rule's dates repeat every ``span`` (see _period): walk one span from DTSTART and, if COUNT
    is not reached, find the COUNT-th among that span's dates shifted by whole spans (a sparse
    rule would otherwise walk to year 9999). Without a span, walk (within PARSE_BUDGET).
    """
    work = Work(PARSE_BUDGET)
    template: list[datetime] = []
    try:
        for value in walk.after(walk.dtstart - _SECOND, work, None):
            if span is not None and value >= walk.dtstart + span:
                break
            template.append(value)
            if len(template) == count:
                return value
    except ScheduleBudgetError:
        raise ScheduleBudgetError(
            f"COUNT={count} takes more than {PARSE_BUDGET:,} steps to reach; give an UNTIL or a smaller COUNT"
        ) from None
    if span is None or not template:
        return None  # the calendar ended first
    shifts, index = divmod(count - 1, len(template))
    try:
        last = template[index] + shifts * span
    except OverflowError:
        return None
    return last if last < datetime(9999, 12, 31) else None


def _period(dtstart: datetime, freq: int, interval: int) -> timedelta | None:
    """A shift that maps the rule's dates onto themselves: whole 400-year cycles (146,097 days)
    that are also whole INTERVALs. None when that reaches past the calendar."""
    cycles = interval // gcd(_CYCLE_UNITS[freq], interval)
    if dtstart.year + 400 * cycles >= 9999:
        return None
    return timedelta(days=146097 * cycles)


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


def _check_satisfiable(walk: _Walk, dtstart: datetime, freq: int, interval: int, parts: dict[str, str]) -> None:
    """Reject rules that never produce a date, and rules too costly to compute.

    The Gregorian calendar repeats every 400 years, so a rule's dates repeat every 400-year cycle
    that is also a whole number of INTERVALs: if none falls within one such span from DTSTART (or
    before the calendar ends), none ever will.
    """
    if "BYMONTHDAY" in parts and "BYMONTH" in parts:
        days = [int(d) for d in parts["BYMONTHDAY"].split(",")]
        months = [int(m) for m in parts["BYMONTH"].split(",")]
        if min(days) > 0 and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
            raise ScheduleError(
                "schedule_expr", f"BYMONTHDAY={parts['BYMONTHDAY']} never occurs in BYMONTH={parts['BYMONTH']}"
            )
    span = _period(dtstart, freq, interval)
    horizon = dtstart + span + timedelta(days=8) if span is not None else None  # 8: a first partial week
    work = Work(PARSE_BUDGET)
    try:
        first = next(walk.after(dtstart - _SECOND, work, None, stop=horizon), None)
    except ScheduleBudgetError:
        raise ScheduleBudgetError(
            f"finding the RRULE's first date takes more than {PARSE_BUDGET:,} steps; "
            "its dates are too far apart (check its BY* parts and INTERVAL)"
        ) from None
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


def _resolve_first(local: datetime, tz: ZoneInfo, work: Work | None = None) -> datetime:
    """Fixed-hour policy: the UTC instant of naive wall time ``local``.

    Repeated time -> its first occurrence; time inside a gap -> the first instant after the gap.
    """
    before = _offset(local.replace(tzinfo=tz, fold=0))  # zoneinfo: fold=0 uses the earlier offset
    after = _offset(local.replace(tzinfo=tz, fold=1))
    first = (local - before).replace(tzinfo=UTC)
    if before >= after:  # ordinary time (equal) or a repeated time (first copy has the larger offset)
        return first
    transition = _next_transition(tz, (local - after).replace(tzinfo=UTC), first, work or Work())
    return first if transition is None else transition


def _first_fixed(
    iter_from: Callable[[datetime], Iterator[datetime]], tz: ZoneInfo, after: datetime, work: Work
) -> datetime | None:
    """First fixed-hour fire strictly after ``after``.

    Wall times map to instants monotonically (gaps collapse, repeats take the first copy), and the
    wall time of ``after`` maps to an instant <= ``after``; so scan wall times from there on.
    """
    start = after.astimezone(tz).replace(tzinfo=None, microsecond=0, fold=0)
    for local in iter_from(start):
        if local >= _LAST_WALL:
            return None
        instant = _resolve_first(local, tz, work)
        if instant > after:
            return instant
    return None


def _first_elapsed(
    iter_from: Callable[[datetime], Iterator[datetime]], tz: ZoneInfo, after: datetime, work: Work
) -> datetime | None:
    """First elapsed-time fire strictly after ``after``: an instant whose wall time matches.

    Between two offset transitions wall time is instant + a constant offset, so the first matching
    wall time gives the answer unless a transition comes first; then continue from the transition
    with the new offset. Gaps are never matched; both copies of a repeated hour are.
    A match more than two days away is resolved on its own (_far_elapsed): the transitions in
    between cannot bring an earlier wall time back.
    """
    offset = _offset(after.astimezone(tz))
    start = (after + offset).replace(tzinfo=None, microsecond=0)
    since = after
    searched: datetime | None = None  # the last search began here and found `local` first
    local: datetime | None = None
    while True:
        work.spend()
        # No wall time in (searched, local) matches, so a later start before `local` finds it again.
        if searched is None or local is None or not searched <= start < local:
            local = next(iter_from(start), None)
            searched = start
        if local is None or local >= _LAST_WALL:
            return None
        candidate = (local - offset).replace(tzinfo=UTC)
        near = min(since, _LAST - _NEAR) + _NEAR
        transition = _next_transition(tz, since, min(candidate, near), work)
        if transition is None:
            return candidate if candidate <= near else _far_elapsed(iter_from, tz, after, local, work)
        offset = _offset(transition.astimezone(tz))
        start = (transition + offset).replace(tzinfo=None) - _SECOND
        since = transition


_NEAR = timedelta(days=2)  # more than any UTC-offset change (the largest, a date line move, is 24 h)


def _far_elapsed(
    iter_from: Callable[[datetime], Iterator[datetime]], tz: ZoneInfo, after: datetime, local: datetime, work: Work
) -> datetime | None:
    """The first instant after ``after`` whose wall time is ``local`` or a later match, when the
    offsets near ``after`` change nothing (no transition within two days of it): a wall time is
    then reached only around its own instant, so each match is resolved with the zone alone —
    the earlier copy of a repeated time, none for a time inside a gap."""
    wall: datetime | None = local
    while wall is not None and wall < _LAST_WALL:
        work.spend()
        for fold in (0, 1):
            instant = (wall - _offset(wall.replace(tzinfo=tz, fold=fold))).replace(tzinfo=UTC)
            if instant > after and instant.astimezone(tz).replace(tzinfo=None) == wall:
                return instant  # fold=0 is the earlier copy of a repeated wall time
        wall = next(iter_from(wall), None)
    return None


def _next_transition(tz: ZoneInfo, after: datetime, limit: datetime, work: Work) -> datetime | None:
    """First UTC-offset change in (after, limit], to the second, or None. Callers ask about
    windows of at most two days (see _NEAR); zone offsets change months apart, so a change is
    there exactly when the offsets at both ends differ. zoneinfo does not expose its transition
    table: bisect to the first second with a different offset."""
    current = _offset(after.astimezone(tz))
    work.spend(2)
    if _offset(limit.astimezone(tz)) == current:
        return None
    lo, hi = int(after.timestamp()), int(limit.timestamp())
    while hi - lo > 1:
        work.spend()
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, UTC).astimezone(tz)) == current:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


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
    # isoformat, not strftime: strftime writes year 1 as "1", RFC 3339 needs "0001"
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"
