"""A task's run counters (`run_count`, `failure_count`, `last_run_at`, `last_run_status`): one
small item per task in the stats table, to which every finished run adds itself once.

- `count` is one UpdateItem: ADD to the counts, SET the last run if it finished no earlier than
  the one shown, and append the run's mark (a 72-bit digest of its id) to `recent`, conditioned
  on the mark not being in `recent`. A retried request, a redelivered message or a second copy
  of the run therefore never counts twice. The item stays under 1 KB (1 write unit, whatever
  the size of the task's definition): once `recent` holds more than RECENT_MAX marks, the
  oldest are trimmed down to RECENT_KEEP, one extra write every RECENT_MAX - RECENT_KEEP runs.
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

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.store.models import StatsModel

COUNTED = ("succeeded", "failed")  # skipped runs are final but never counted
RECENT_MAX = 60  # 13 bytes a mark: the item stays under 1 KB
RECENT_KEEP = 20
BATCH = 100  # BatchGetItem's limit


@dataclass(frozen=True)
class Counters:
    last_run_at: str | None = None  # when the run that finished last finished
    last_run_status: str | None = None
    run_count: int = 0  # finished runs: succeeded + failed
    failure_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _of(item: StatsModel) -> Counters:
    return Counters(item.last_run_at, item.last_run_status, int(item.run_count or 0), int(item.failure_count or 0))


def read(task_id: str) -> Counters:
    """The task's counters (one consistent GetItem; zeros before its first finished run)."""
    try:
        return _of(StatsModel.get(task_id, consistent_read=True))
    except StatsModel.DoesNotExist:
        return Counters()


def read_many(task_ids: Iterable[str]) -> dict[str, Counters]:
    """The counters of many tasks (consistent BatchGetItem, 100 keys a request)."""
    ids = list(dict.fromkeys(task_ids))
    found = {
        item.task_id: _of(item)
        for i in range(0, len(ids), BATCH)
        for item in StatsModel.batch_get(ids[i : i + BATCH], consistent_read=True)
    }
    return {tid: found.get(tid, Counters()) for tid in ids}


def mark(run_id: str) -> str:
    """What `recent` remembers of a run: 72 bits of its id's SHA-256, 12 characters."""
    return base64.b64encode(hashlib.sha256(run_id.encode()).digest()[:9]).decode()


def _conditional_failure(e: UpdateError) -> bool:
    return e.cause_response_code == "ConditionalCheckFailedException"


def count(task_id: str, run_id: str, status: str, finished_at: str) -> bool:
    """Add a finished run to its task's counters; False if it was counted already (or is not
    counted: skipped). Call it before the run's final record is saved (see the docstring)."""
    if status not in COUNTED:
        return False
    item, m = StatsModel(task_id), mark(run_id)
    adds: list[Any] = [StatsModel.run_count.add(1), StatsModel.recent.set((StatsModel.recent | []).append([m]))]
    if status == "failed":
        adds.append(StatsModel.failure_count.add(1))
    fresh = ~StatsModel.recent.contains(m)
    latest = StatsModel.last_run_at.does_not_exist() | (StatsModel.last_run_at <= finished_at)
    try:
        item.update(
            actions=[*adds, StatsModel.last_run_at.set(finished_at), StatsModel.last_run_status.set(status)],
            condition=fresh & latest,
        )
    except UpdateError as e:
        if not _conditional_failure(e):
            raise
        # Counted already, or a run that finished later was counted first (rare: two runs of
        # one task finishing together): count without moving the last run back.
        try:
            item.update(actions=adds, condition=fresh)
        except UpdateError as e2:
            if _conditional_failure(e2):
                return False
            raise
    _trim(item)
    return True


def _trim(item: StatsModel) -> None:
    """Drop the oldest marks once `recent` outgrows RECENT_MAX. Appends go to the end, so the
    condition pins the prefix removed: a concurrent append survives, a concurrent trim makes
    this one fail harmlessly (the next count trims if still needed)."""
    marks = list(item.recent or [])  # as returned by the count's update (ALL_NEW)
    if len(marks) <= RECENT_MAX:
        return
    old = marks[: len(marks) - RECENT_KEEP]
    cond = None
    for i, m in enumerate(old):
        c = StatsModel.recent[i] == m
        cond = c if cond is None else cond & c
    try:
        item.update(actions=[StatsModel.recent[i].remove() for i in range(len(old))], condition=cond)
    except UpdateError as e:
        if not _conditional_failure(e):
            raise
