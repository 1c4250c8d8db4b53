"""A task's run counters (`last_run_at`, `last_run_status`, `run_count`, `failure_count`),
folded lazily from the run records instead of written by the worker after every run.

The task item holds the counters *folded* from every run whose id is <= `counted_through`
(None: nothing folded yet). Run ids start with a 10-digit epoch, so a task's runs sort by
time in its partition of the runs table, and the runs not folded yet are one Query:

- `live` is what the API shows: the folded values plus the finished runs (succeeded or
  failed; skipped runs never count) after `counted_through`.
- `fold` moves the longest prefix of final runs after `counted_through` into the item with
  one UpdateItem conditioned on `counted_through` being unchanged, so two folds never count
  a run twice (the loser's write fails and is ignored).

Who folds: the API read path when the foldable delta has grown (read repair), the worker
about once a day per task (`fold_due`), and the worker when a run completes its task (so a
`once` task is folded before its run record expires). A fold never passes a run younger than
`HORIZON_SECONDS`: the Query is eventually consistent and a run record is written by its
first claim, which may come a little after the instant its id names; a fold past a record
that was not there yet would never count it. A run that first reaches a worker later than
that is counted by the worker itself when it finishes (`count_late`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib import runs
from chalicelib.config import settings
from chalicelib.models import RunModel, TaskModel

FINISHED = ("succeeded", "failed")  # counted; `skipped` is final but never counted
FINAL = ("succeeded", "failed", "skipped")
DAY = 86_400
HORIZON_SECONDS = 3_600  # runs younger than this are never folded (see the module docstring)
STUCK_SECONDS = 3 * DAY  # a run still unfinished this long after its instant no longer blocks folds
READ_REPAIR_RUNS = 25  # the API folds once this many final runs are foldable
EVERY_RUN = "9999999999"  # a `through` past every run id: fold every final run, however recent


def run_epoch(run_id: str | None) -> int:
    """The instant a run id starts with (0 if it does not)."""
    try:
        return int((run_id or "")[:10])
    except ValueError:
        return 0


def fold_interval() -> int:
    """How stale a task's fold may get before the worker folds it again: a day, and always well
    inside the run retention, so finished runs are folded long before their records expire."""
    return min(DAY, settings().run_retention_days * DAY // 2)


def folded(task: TaskModel) -> dict[str, Any]:
    """The counters as stored on the task item (as of its last fold)."""
    return {
        "last_run_at": task.last_run_at,
        "last_run_status": task.last_run_status,
        "run_count": int(task.run_count or 0),
        "failure_count": int(task.failure_count or 0),
    }


def _add(counters: dict[str, Any], records: Iterable[RunModel]) -> dict[str, Any]:
    out = dict(counters)
    for rec in records:
        if rec.status not in FINISHED:
            continue
        out["run_count"] += 1
        out["failure_count"] += rec.status == "failed"
        finished_at = (rec.doc or {}).get("finished_at")
        if finished_at and (out["last_run_at"] is None or finished_at > out["last_run_at"]):
            out["last_run_at"], out["last_run_status"] = finished_at, rec.status
    return out


def unfolded(task: TaskModel, *, consistent: bool = False) -> list[RunModel]:
    """The task's run records after `counted_through`, oldest first (one paginated Query)."""
    cond = RunModel.run_id > task.counted_through if task.counted_through else None
    return list(RunModel.query(task.task_id, cond, scan_index_forward=True, consistent_read=consistent))


def _prefix(
    records: list[RunModel], now: datetime, through: str | None = None
) -> tuple[str | None, list[RunModel], int | None]:
    """The run id a fold may move `counted_through` to, the final runs it moves over, and the
    instant of the oldest of those (None when nothing can move)."""
    t = now.timestamp()
    end: str | None = None
    moved: list[RunModel] = []
    for rec in records:
        at = run_epoch(rec.run_id)
        if at > t - HORIZON_SECONDS and (through is None or rec.run_id > through):
            break  # too recent: an earlier record may not be visible yet
        if runs.expired(rec, now):
            end = rec.run_id  # past retention: `live` ignores it too
        elif rec.status in FINAL:
            moved.append(rec)
            end = rec.run_id
        elif at < t - STUCK_SECONDS:
            # Stuck: unfinished three days after its instant (retries end within ~a day, leases
            # in 15 min), so it no longer holds the fold back. It is passed over uncounted; if it
            # ever finishes, the worker counts it then (count_late).
            end = rec.run_id
        else:
            break  # queued, running or retrying: later runs wait until it is final
    return end, moved, (run_epoch(moved[0].run_id) if moved else None)


def _write(task: TaskModel, records: list[RunModel], now: datetime, through: str | None = None) -> bool:
    """One conditional UpdateItem moving the foldable prefix of `records` into the item."""
    end, moved, _ = _prefix(records, now, through)
    if end is None:
        return False
    before = folded(task)
    after = _add(before, moved)
    actions: list[Any] = [TaskModel.counted_through.set(end)]
    if after["run_count"] != before["run_count"]:
        actions.append(TaskModel.run_count.add(after["run_count"] - before["run_count"]))
    if after["failure_count"] != before["failure_count"]:
        actions.append(TaskModel.failure_count.add(after["failure_count"] - before["failure_count"]))
    if after["last_run_at"] != before["last_run_at"]:
        actions += [
            TaskModel.last_run_at.set(after["last_run_at"]),
            TaskModel.last_run_status.set(after["last_run_status"]),
        ]
    cond = (
        TaskModel.counted_through == task.counted_through
        if task.counted_through
        else TaskModel.counted_through.does_not_exist() & TaskModel.task_id.exists()
    )
    try:
        task.update(actions=actions, condition=cond)  # refreshes `task` with the folded item
    except UpdateError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return False  # another fold moved first (or the task is gone): it counted these runs
        raise
    return True


def fold(task: TaskModel, now: datetime, *, through: str | None = None) -> bool:
    """Fold the final runs after `counted_through` into the task item; True if it moved.

    `through` lets a run the caller knows is final (and everything before it) be folded
    although it is younger than the horizon; the Query is then strongly consistent."""
    return _write(task, unfolded(task, consistent=through is not None), now, through)


def live(task: TaskModel, now: datetime, *, repair: bool = False) -> dict[str, Any]:
    """The counters as the API shows them: folded values plus the finished runs after them.

    With `repair`, a read that finds many foldable runs (or old ones nobody folded: a task
    that stopped running) folds them, so the next reads stay one short Query. A lost race
    is ignored; the answer is the same either way."""
    records = [r for r in unfolded(task) if not runs.expired(r, now)]
    counters = _add(folded(task), records)
    if repair:
        _, moved, oldest = _prefix(records, now)
        stale = oldest is not None and oldest < now.timestamp() - 2 * fold_interval()
        if len(moved) >= READ_REPAIR_RUNS or stale:
            _write(task, records, now)
    return counters


def fold_due(task: TaskModel, run_id: str) -> bool:
    """Whether the worker that just finished `run_id` should fold: the task's fold is older than
    `fold_interval()` (measured from the last folded run, or from the task's creation)."""
    if task.counted_through:
        since = run_epoch(task.counted_through)
    else:
        since = int(datetime.fromisoformat(task.created_at.replace("Z", "+00:00")).timestamp())
    return run_epoch(run_id) - since >= fold_interval()


def count_late(task: TaskModel, rec: RunModel, status: str, finished_at: str, now: datetime) -> bool:
    """Count a run that finished long after its instant if a fold already moved past it.

    Folds never pass a run younger than the horizon, so a run can be passed uncounted only if
    its record was written late (a missed fire run after an outage, a long queue backlog) or
    it was stuck for days. Such a run is only ever counted here: one conditional UpdateItem,
    applied only when `counted_through` is at or past the run. Called after the run's final
    record is saved (a crash in between undercounts, as a lost counter write always did)."""
    if now.timestamp() - run_epoch(rec.run_id) < HORIZON_SECONDS // 2:
        return False  # no fold can have passed it
    actions: list[Any] = [TaskModel.run_count.add(1)]
    if status == "failed":
        actions.append(TaskModel.failure_count.add(1))
    if task.last_run_at is None or finished_at > task.last_run_at:
        actions += [TaskModel.last_run_at.set(finished_at), TaskModel.last_run_status.set(status)]
    try:
        TaskModel(task.task_id).update(actions=actions, condition=TaskModel.counted_through >= rec.run_id)
    except UpdateError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return False  # not folded past it: a later fold counts it
        raise
    return True
