"""A task's run counters (`run_count`, `failure_count`, `last_run_at`, `last_run_status`): one
small item per task in the stats table (`StatsStore`), to which every finished run adds itself once.

- `count` is one conditional write: add to the counts, set the last run if it finished no
  earlier than the one shown, and append the run's mark (a 72-bit digest of its id,
  `domain/counting.py`) to `recent`, on condition that the mark is not in `recent`. A retried
  request, a redelivered message or a second copy of the run therefore never counts twice. The
  item stays under 1 KB (1 write unit, whatever the size of the task's definition): once
  `recent` holds more than RECENT_MAX marks, the oldest are trimmed down to RECENT_KEEP, one
  extra write every RECENT_MAX - RECENT_KEEP runs.
- Whoever finishes a run counts it *before* saving the run's final record: a crash in between
  leaves the run unfinished, so its retry runs it again and its count finds the mark in
  `recent` (nothing lost, nothing doubled). Once the final record is saved nobody counts the run again:
  every path reads the record first and drops a finished run.
- `read` / `read_many` are plain reads: a GET never writes. Run records may expire (retention);
  the counts do not depend on them.

The one bound: a second count of a run is refused while its mark is among the RECENT_KEEP
newest at least (see docs/runs.md). A worker that dies between the count and the save is
retried minutes later: that run is counted twice only if RECENT_KEEP or more other runs of
the same task were counted meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable

from chalicelib.domain.counting import COUNTED, RECENT_KEEP, RECENT_MAX, Counters, mark
from chalicelib.store import stores

__all__ = ["COUNTED", "RECENT_KEEP", "RECENT_MAX", "Counters", "count", "mark", "read", "read_many"]


def count(task_id: str, run_id: str, status: str, finished_at: str) -> bool:
    """Add a finished run to its task's counters; False if it was counted already (or is not
    counted: skipped). Call it before the run's final record is saved (see the docstring)."""
    if status not in COUNTED:
        return False
    return stores().stats.count(task_id, run_id, status, finished_at)


def read(task_id: str) -> Counters:
    """The task's counters (one consistent read; zeros before its first finished run)."""
    return stores().stats.read(task_id)


def read_many(task_ids: Iterable[str]) -> dict[str, Counters]:
    """The counters of many tasks (consistent, 100 keys a request on DynamoDB)."""
    return stores().stats.read_many(task_ids)
