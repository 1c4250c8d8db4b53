"""Per-agent run budgets: the pure part (which limits apply, how many runs a bucket admits).

A budget is four numbers per agent: runs a minute and their burst (a GCRA bucket, the same
algorithm as the request rate limits), runs in flight (0: not counted), and the minimum interval
a schedule may fire at. Each is the admin's value on the agent, or the operator's default when
the agent has none: the agent's value wins both ways (it may be lower or higher than the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chalicelib.domain import schedules

# The schedule engine's resolution: cron has minute fields and rrules refuse FREQ=SECONDLY, so no
# schedule fires more than once a minute whatever the budget says; a smaller interval is refused.
ENGINE_MIN_INTERVAL_SECONDS = 60
MAX_MIN_INTERVAL_SECONDS = 86_400
MAX_RUNS_PER_MINUTE = 100_000
MAX_RUNS_IN_FLIGHT = 100  # taking a slot tries the held ones first: one conditional write each
# A schedule's fires are checked against a raised minimum interval this far ahead (and at most
# 200 fires): a weekly or monthly pattern shows every gap it has within it.
CHECK_SPAN = timedelta(days=35)
FIELDS = ("runs_per_minute", "runs_burst", "runs_in_flight", "min_interval_seconds")  # as on the Agent


@dataclass(frozen=True)
class RunLimits:
    runs_per_minute: int  # 0: no bucket
    runs_burst: int
    runs_in_flight: int  # 0: not counted
    min_interval_seconds: int

    @property
    def step_ms(self) -> int:
        """The bucket's emission interval: how far one run moves its theoretical arrival time."""
        return math.ceil(60_000 / self.runs_per_minute) if self.runs_per_minute > 0 else 0


def effective(defaults: RunLimits, **own: int | None) -> RunLimits:
    """The limits that apply: the agent's own value of each (not None), else the default."""
    return replace(defaults, **{name: value for name, value in own.items() if value is not None})


def room(tat_ms: int | None, now_ms: int, step_ms: int, burst: int) -> int:
    """How many runs a GCRA bucket at `tat_ms` admits at `now_ms`: the k whose last one still
    lies within the allowance of `burst - 1` steps ahead of now. Unset or in the past: full."""
    if step_ms <= 0:
        return burst
    ahead = max(tat_ms or now_ms, now_ms) - now_ms
    allowance = (max(burst, 1) - 1) * step_ms
    if ahead > allowance:
        return 0
    return (allowance - ahead) // step_ms + 1


def too_close(
    schedule: schedules.Schedule, after: datetime, min_interval_seconds: int, *, fires: int = 200
) -> tuple[datetime, datetime] | None:
    """The first two consecutive fires after `after` closer than `min_interval_seconds`, among
    the next `fires` fires and within CHECK_SPAN (None: none). Only a setting above the engine's
    own floor needs the walk: every schedule fires at most once a minute."""
    if min_interval_seconds <= ENGINE_MIN_INTERVAL_SECONDS or schedule.kind in ("once", "event"):
        return None
    gap = timedelta(seconds=min_interval_seconds)
    end = after + CHECK_SPAN
    # One work budget for the whole walk, the size of one fire's: a rule costly to step through
    # cannot make a request walk 200 times that. What it leaves unchecked, the runs a minute bound.
    work = schedules.Work(schedules.WORK_BUDGET)
    try:
        prev = schedules.next_fire(schedule, after, work=work)
        for _ in range(fires):
            if prev is None or prev > end:
                return None
            nxt = schedules.next_fire(schedule, prev, work=work)
            if nxt is not None and nxt - prev < gap:
                return prev, nxt
            prev = nxt
    except schedules.ScheduleBudgetError:
        return None
    return None
