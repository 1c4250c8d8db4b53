"""Next-fire computation: ours vs cronsim vs croniter on the same 10,000 cron expressions.

The tick computes, for each due task, the next fire after a given instant. So each library is
timed the way the tick would use it: a fresh object per call (croniter, cronsim), against ours
(`parse_schedule` + `next_fire`, with its LRU cache warm, and "cold" with the caches cleared
before every call). Figures are µs per call, best of 3 passes (one pass for croniter and for
ours cold, to keep the run under a minute); the methods take turns in chunks of 500. Run: `make bench` (= `python bench/schedules.py`).
Merges its figures into bench/results.json.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter
from cronsim import CronSim

from chalicelib.domain import schedules

COUNT = 10_000
PASSES = 3
SEED = 20270328
AFTER = datetime(2027, 3, 27, 22, 30, tzinfo=UTC)  # the evening before Chisinau's spring-forward
NOW = datetime(2027, 1, 1, tzinfo=UTC)
ZONES = (("UTC", ""), ("Europe/Chisinau", "_chisinau"))
RESULTS = Path(__file__).resolve().parent / "results.json"


def _field(rng: random.Random, lo: int, hi: int, star: float, names: tuple[str, ...] = ()) -> str:
    """One random cron field: `*`, a step, a value, a list, a range or a stepped range."""
    roll = rng.random()
    if roll < star:
        return "*"
    roll = rng.random()
    if roll < 0.2:
        return f"*/{rng.choice([d for d in range(2, hi - lo + 1) if (hi - lo + 1) % d == 0] or [2])}"
    if roll < 0.45:
        value = rng.randint(lo, hi)
        return names[value - lo] if names and rng.random() < 0.3 else str(value)
    if roll < 0.7:
        return ",".join(str(v) for v in sorted(rng.sample(range(lo, hi + 1), rng.randint(2, 4))))
    a, b = sorted(rng.sample(range(lo, hi + 1), 2))
    if roll < 0.85:
        return f"{a}-{b}"
    return f"{a}-{b}/{rng.randint(2, 5)}"


def expressions() -> list[str]:
    """COUNT distinct cron expressions all three libraries accept (deterministic)."""
    rng = random.Random(SEED)
    days = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
    months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    seen: dict[str, None] = {}
    while len(seen) < COUNT:
        expr = " ".join(
            (
                _field(rng, 0, 59, 0.05),
                _field(rng, 0, 23, 0.3),
                _field(rng, 1, 28, 0.75),
                _field(rng, 1, 12, 0.8, months),
                _field(rng, 0, 6, 0.7, days),
            )
        )
        if expr in seen:
            continue
        try:
            schedules.parse_schedule("cron", expr, now=NOW)
            CronSim(expr, AFTER)
            croniter(expr, AFTER)
        except Exception:  # noqa: BLE001 - keep only expressions every library accepts
            continue
        seen[expr] = None
    return list(seen)


def timed(
    methods: dict[str, tuple[Callable[[str], object], int]], exprs: list[str]
) -> tuple[dict[str, float], dict[str, list[object]]]:
    """µs per call (best pass) and first-pass results of each method.

    Methods take turns chunk by chunk, so a burst of load from other processes on the machine
    hits all of them alike instead of whichever happened to be running.
    """
    chunks = [exprs[i : i + 500] for i in range(0, len(exprs), 500)]
    seconds = {name: [0.0] * passes for name, (_, passes) in methods.items()}
    results: dict[str, list[object]] = {name: [] for name in methods}
    for attempt in range(max(passes for _, passes in methods.values())):
        for chunk in chunks:
            for name, (fn, passes) in methods.items():
                if attempt >= passes:
                    continue
                start = time.perf_counter()
                out = [fn(expr) for expr in chunk]
                seconds[name][attempt] += time.perf_counter() - start
                if attempt == 0:
                    results[name].extend(out)
    return {name: min(spent) / len(exprs) * 1e6 for name, spent in seconds.items()}, results


def main() -> None:
    started = time.perf_counter()
    exprs = expressions()
    figures: dict[str, float] = {}
    rows = []
    for zone, suffix in ZONES:
        tz = ZoneInfo(zone)
        local_after = AFTER.astimezone(tz)

        def ours(expr: str, zone: str = zone) -> datetime | None:
            return schedules.next_fire(schedules.parse_schedule("cron", expr, zone, now=NOW), AFTER)

        def ours_cold(expr: str, zone: str = zone) -> datetime | None:
            schedules.clear_caches()
            return ours(expr, zone)

        def with_cronsim(expr: str, local_after: datetime = local_after) -> datetime | None:
            return next(CronSim(expr, local_after), None)

        def with_croniter(expr: str, local_after: datetime = local_after) -> datetime:
            return croniter(expr, local_after).get_next(datetime)

        for expr in exprs:  # warm the cache (and the zone's transition table) untimed
            ours(expr)
        row, results = timed(
            {"ours": (ours, PASSES), "cronsim": (with_cronsim, PASSES), "croniter": (with_croniter, 1)}, exprs
        )
        cold, _ = timed({"ours_cold": (ours_cold, 1)}, exprs)  # last: it empties the cache
        row.update(cold)
        agree_cronsim = sum(a == b for a, b in zip(results["ours"], results["cronsim"], strict=True))
        agree_croniter = sum(a == b for a, b in zip(results["ours"], results["croniter"], strict=True))
        rows.append((zone, row, agree_cronsim, agree_croniter))
        for name, value in row.items():
            figures[f"next_fire_us_{name}{suffix}"] = round(value, 2)

    print(f"next fire after {AFTER:%Y-%m-%dT%H:%M:%SZ}: µs per call, best of {PASSES} passes, {len(exprs):,} crons")
    print(f"{'zone':<16} {'ours':>8} {'ours cold':>10} {'cronsim':>9} {'croniter':>9} {'cronsim/ours':>13}  same as")
    for zone, row, agree_cronsim, agree_croniter in rows:
        print(
            f"{zone:<16} {row['ours']:>8.2f} {row['ours_cold']:>10.2f} {row['cronsim']:>9.2f} {row['croniter']:>9.2f}"
            f" {row['cronsim'] / row['ours']:>12.1f}x  cronsim {agree_cronsim}, croniter {agree_croniter}"
        )
    print("ours = parse_schedule (LRU-cached) + next_fire; cold = caches cleared before each call;")
    print("cronsim/croniter = a new object per call, as a tick would build one per task.")
    print("'same as' counts identical results; differences are DST-policy cases (see docs/schedules.md).")

    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing.update(figures)
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"merged {len(figures)} keys into {RESULTS.name} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
