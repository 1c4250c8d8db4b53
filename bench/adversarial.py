"""Worst-case schedule work (issue 11): schedules from the grammar's worst corners, timed cold.

Each case is a schedule (RRULE: every FREQ × dense, sparse and ordinal BY* parts × INTERVAL ×
a DTSTART far in the past or near the calendar's end × COUNT; cron: dense, sparse and OR'd day
fields), a time zone (UTC, DST zones, a 30-minute DST, a 45-minute offset) with and without jitter,
and an `after` from year 1 to the end of year 9999. For each it times, with the engine's caches
empty (compiled rules, day masks, zone transitions): `parse_schedule`, one `next_fire`, and a
`preview` of 100. It reports the worst of each with the case that caused it, and how many cases
were refused (400 at create) or ran out of budget (none should).

Run: `python bench/adversarial.py` (part of `make bench`). Merges `schedule_worst_next_fire_ms`,
`schedule_worst_preview_ms`, `schedule_worst_parse_ms` (each with `_case`) and counts into
bench/results.json. Goal: next fire and preview ≤ 50 ms.
"""

from __future__ import annotations

import functools
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from chalicelib.domain import schedules

NOW = datetime(2026, 12, 3, tzinfo=UTC)
SEED = 11
SAMPLE = 700  # random cases from the product, on top of the named worst ones
ALL_DAYS = "MO,TU,WE,TH,FR,SA,SU"
HOURS = ",".join(map(str, range(24)))
MINUTES = ",".join(map(str, range(60)))
FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY")
PARTS = (
    "",
    f"BYDAY={ALL_DAYS};BYHOUR={HOURS};BYMINUTE={MINUTES}",  # 527,040 candidates a year
    f"BYMONTH=2;BYMONTHDAY=29;BYHOUR={HOURS};BYMINUTE={MINUTES}",
    "BYMONTH=2;BYMONTHDAY=29",  # every 4 years (8 around 2100)
    "BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",  # up to 40 years apart
    "BYYEARDAY=366;BYDAY=SU",
    "BYWEEKNO=53;BYDAY=TH",
    "BYDAY=1MO,-1FR,2TU,3WE;BYSETPOS=1,-1",
    f"BYDAY={ALL_DAYS};BYHOUR={HOURS};BYMINUTE={MINUTES};BYSETPOS=366,-366,1",
    "BYMONTHDAY=-1,-2,-3,31;BYMONTH=1,3,5,7,8,10,12",
    "BYMONTHDAY=13;BYDAY=FR",
)
INTERVALS = ("", "INTERVAL=7", "INTERVAL=400", "INTERVAL=1439", "INTERVAL=1000000")
DTSTARTS = ("", "DTSTART:19000101T000000Z", "DTSTART:19900101T000000Z", "DTSTART:89991231T235959Z")
COUNTS = ("", "COUNT=10000")
CRONS = (
    "* * * * *",
    "0 0 29 2 *",
    "*/5 * 29 2 1",
    "0 0 */30 2 MON",
    "59 23 31 12 *",
    "30 2 * * *",
    "*/15 2 * * *",
    "0 0 13 * FRI",
    "@yearly",
)
ZONES = ("UTC", "America/New_York", "Europe/Chisinau", "Australia/Lord_Howe", "Asia/Kathmandu")
JITTERS = (0, 3600)
AFTERS = (
    "0001-01-01T00:00:00+00:00",
    "1990-01-01T00:00:00+00:00",
    "2027-03-28T00:30:00+00:00",
    "8000-01-01T00:00:00+00:00",
    "9998-12-31T23:00:00+00:00",
    "9999-12-30T12:00:00+00:00",
    "9999-12-31T23:59:00+00:00",
)
NAMED = (  # the cases, always measured
    ("rrule", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=10000", "UTC", 0, "2026-12-03T00:00:00+00:00"),
    ("rrule", f"FREQ=YEARLY;{PARTS[1]}", "UTC", 0, "8000-01-01T00:00:00+00:00"),
    ("rrule", f"DTSTART:19900101T000000Z\nRRULE:FREQ=YEARLY;{PARTS[1]}", "UTC", 0, "2026-12-03T00:00:00+00:00"),
    ("cron", "*/5 * * * *", "UTC", 0, "9999-12-31T23:59:00+00:00"),
    ("cron", "*/5 * * * *", "America/New_York", 0, "0001-01-01T00:00:00+00:00"),
    ("rrule", "FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", "America/New_York", 0, "2027-03-01T00:00:00+00:00"),
)

Case = tuple[str, str, str, int, str]


def rrule_text(freq: str, parts: str, interval: str, dtstart: str, count: str) -> str:
    rule = ";".join(p for p in (f"FREQ={freq}", interval, parts, count) if p)
    return f"{dtstart}\nRRULE:{rule}" if dtstart else rule


def cases() -> list[Case]:
    """The named cases, then a seeded sample of the product of all corners."""
    rng = random.Random(SEED)
    rules = [
        rrule_text(*combo) for combo in itertools.product(FREQS, PARTS, INTERVALS, DTSTARTS, COUNTS) if combo[1] != ""
    ]
    rules += [rrule_text(f, "", i, d, c) for f, i, d, c in itertools.product(FREQS, INTERVALS, DTSTARTS, COUNTS)]
    out: list[Case] = list(NAMED)
    for _ in range(SAMPLE):
        zone, jitter, after = rng.choice(ZONES), rng.choice(JITTERS), rng.choice(AFTERS)
        if rng.random() < 0.2:
            out.append(("cron", rng.choice(CRONS), zone, jitter, after))
        else:
            out.append(("rrule", rng.choice(rules), zone, jitter, after))
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return (time.perf_counter() - start) * 1000, value


def main() -> None:
    started = time.perf_counter()
    worst: dict[str, tuple[float, str]] = {"parse": (0.0, ""), "next_fire": (0.0, ""), "preview": (0.0, "")}
    spent: dict[str, list[float]] = {"parse": [], "next_fire": [], "preview": []}
    steps_worst = {"next_fire": 0, "preview": 0}
    refused: dict[str, int] = {}
    out_of_budget = 0
    all_cases = cases()
    slow: list[tuple[float, str, str]] = []
    for kind, expr, zone, jitter, after_text in all_cases:
        label = f"{kind} {expr!r} in {zone}, jitter {jitter}, after {after_text}"
        after = datetime.fromisoformat(after_text)
        schedules.clear_caches()  # cold: compiled rules, cron fields, zone transitions
        try:
            ms, schedule = timed(
                functools.partial(
                    schedules.parse_schedule, kind, expr, zone, now=NOW, jitter_seconds=jitter, jitter_seed="bench-task"
                )
            )
        except schedules.ScheduleError as e:
            reason = "budget" if isinstance(e, schedules.ScheduleBudgetError) else e.message.split(";")[0][:60]
            refused[reason] = refused.get(reason, 0) + 1
            continue
        for name in ("next_fire", "preview"):
            schedules.clear_caches()  # the day masks of other years stay on the rule, as in a warm Lambda
            work = schedules.Work()
            try:
                if name == "next_fire":
                    ms_step, _ = timed(functools.partial(schedules.next_fire, schedule, after, work=work))
                else:
                    ms_step, _ = timed(functools.partial(schedules.preview, schedule, after, 100, work=work))
            except schedules.ScheduleBudgetError:
                out_of_budget += 1
                continue
            spent[name].append(ms_step)
            slow.append((ms_step, name, label))
            steps_worst[name] = max(steps_worst[name], work.spent)
            if ms_step > worst[name][0]:
                worst[name] = (ms_step, label)
        spent["parse"].append(ms)
        if ms > worst["parse"][0]:
            worst["parse"] = (ms, label)

    figures: dict[str, Any] = {
        "schedule_adversarial_cases": len(all_cases),
        "schedule_adversarial_refused": sum(refused.values()),
        "schedule_adversarial_out_of_budget": out_of_budget,
    }
    print(f"{len(all_cases)} cases, caches cleared before each step; ms (cold)")
    print(f"{'step':<10} {'p50':>7} {'p99':>7} {'worst':>7}  worst steps  worst case")
    for name in ("parse", "next_fire", "preview"):
        values = sorted(spent[name])
        p50, p99 = statistics.median(values), values[int(len(values) * 0.99) - 1]
        figures[f"schedule_worst_{name}_ms"] = round(worst[name][0], 2)
        figures[f"schedule_worst_{name}_case"] = worst[name][1]
        figures[f"schedule_p99_{name}_ms"] = round(p99, 2)
        if name in steps_worst:  # the engine's own count: the same on any machine
            figures[f"schedule_worst_{name}_steps"] = steps_worst[name]
        steps = f"{steps_worst[name]:>11,}" if name in steps_worst else f"{'':>11}"
        print(f"{name:<10} {p50:>7.2f} {p99:>7.2f} {worst[name][0]:>7.2f}  {steps}  {worst[name][1]}")
    print(f"refused at parse (400): {refused or 'none'}; out of budget after parse: {out_of_budget}")
    over = sorted(slow, reverse=True)
    print(f"over 50 ms: {sum(ms > 50 for ms, _, _ in over)} of {len(over)} steps; the slowest:")
    for ms, name, label in over[:8]:
        print(f"  {ms:8.2f} ms  {name:<9} {label[:150]}")
    print("preview = 100 fires; steps = the engine's work count (Work.spent), budget", f"{schedules.WORK_BUDGET:,}")
    write_results(figures)
    print(f"merged {len(figures)} keys into bench/results.json in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
