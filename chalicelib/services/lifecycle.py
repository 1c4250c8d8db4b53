"""Task lifecycle: pause, resume, cancel, snooze, run_now.

Each transition is checked against the task's status (409 otherwise) and written with a
condition on the version read, re-reading on a lost race, so two concurrent requests can
never both apply to the same state. Pause, snooze and cancel bump the schedule version:
runs already dispatched under the old version are skipped by the worker (fencing).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from chalicelib import dispatch
from chalicelib.domain.contracts import RunNowRequest, SnoozeRequest
from chalicelib.domain.errors import StateConflict, TooLarge
from chalicelib.domain.timefmt import epoch, iso
from chalicelib.domain.validation import parse, stored_size
from chalicelib.platform import wiring
from chalicelib.platform.config import band_for, settings
from chalicelib.services import runs
from chalicelib.services.agents import Caller
from chalicelib.services.runs import RunMessage
from chalicelib.services.tasks import load
from chalicelib.store.models import AgentModel, TaskModel

Change = Callable[[TaskModel], bool]  # mutates the task; False = nothing to do (idempotent no-op)


def _transition(
    caller: Caller,
    task_id: str,
    allowed: tuple[str, ...],
    action: str,
    change: Change,
    now: datetime,
    *,
    on_save: Callable[[TaskModel, TaskModel], None] | None = None,
) -> TaskModel:
    for _ in range(8):
        task = load(caller, task_id)
        read = copy.deepcopy(task)
        if task.status not in allowed:
            raise StateConflict(f"cannot {action} a task that is {task.status}")
        if not change(task):
            return task
        task.updated_at = iso(now)
        try:
            if on_save is None:
                task.save_versioned(read)
            else:
                on_save(task, read)
        except PutError as e:
            if _lost_race(e):
                continue
            raise
        return task
    raise StateConflict(f"the task is being changed concurrently; retry the {action}")


def _lost_race(e: Exception) -> bool:
    return getattr(e, "cause_response_code", None) == "ConditionalCheckFailedException"


def _unschedule(task: TaskModel) -> None:
    task.schedule_version = int(task.schedule_version or 1) + 1
    task.due_shard = task.due_at = None
    task.snoozed_until = task.snooze_reason = None


def _stop(status: str) -> Change:
    """The change that stops a task's schedule into `status` (a no-op if already there)."""

    def change(task: TaskModel) -> bool:
        if task.status == status:
            return False
        task.status = status
        _unschedule(task)
        return True

    return change


def pause(caller: Caller, task_id: str, now: datetime) -> TaskModel:
    return _transition(caller, task_id, ("active", "paused"), "pause", _stop("paused"), now)


def resume(caller: Caller, task_id: str, now: datetime) -> TaskModel:
    def change(task: TaskModel) -> bool:
        if task.status == "active":
            return False
        _unschedule(task)
        # Missed occurrences while paused are not run: the next fire is computed from now.
        task.status = "active"
        dispatch.schedule_next(task, dispatch.next_fire_from(task, now))
        return True

    task = _transition(caller, task_id, ("paused", "active"), "resume", change, now)
    dispatch.dispatch_if_soon(task, now)
    return task


def cancel(caller: Caller, task_id: str, now: datetime) -> TaskModel:
    def save(task: TaskModel, read: TaskModel) -> None:
        task.save_versioned(read)
        # A canceled task no longer counts against its agent's quota (best effort: a crash
        # here leaves the count one too high, never too low).
        try:
            AgentModel(task.created_by).update(
                actions=[AgentModel.task_count.add(-1)], condition=AgentModel.task_count > 0
            )
        except UpdateError:
            pass

    every = ("active", "paused", "completed", "canceled")
    return _transition(caller, task_id, every, "cancel", _stop("canceled"), now, on_save=save)


def snooze(caller: Caller, task_id: str, data: Any, now: datetime) -> TaskModel:
    """Move the next scheduled execution later; the cadence after it is unchanged.

    The schedule restarts at the moved instant (the tick drops the pending fires before it).
    Fires it skips that may already be on a queue are recorded `skipped`/`superseded` up front,
    which their messages then find: the schedule version is not bumped, so retries and waiting
    runs of earlier fires are unaffected."""
    req = parse(SnoozeRequest, data)
    fenced: list[int] = []
    version: list[int] = []

    def change(task: TaskModel) -> bool:
        fenced.clear()
        version.clear()
        if task.schedule_kind == "event":  # no schedule: its event runs wait until the snooze ends
            until = now.timestamp() + req.delay_seconds
            task.snoozed_until = iso(datetime.fromtimestamp(until, tz=now.tzinfo))
            task.snooze_reason = req.reason
            return True
        pending = dispatch.pending_fire(task, now)
        if pending is None:
            raise StateConflict("the task has no scheduled execution to snooze")
        new = pending + req.delay_seconds
        fenced.extend(dispatch.possibly_sent(task, pending, new, now))
        version.append(int(task.schedule_version or 1))
        task.due_shard, task.due_at = dispatch.shard_for(task.task_id), new
        task.snoozed_until = iso(datetime.fromtimestamp(new, tz=now.tzinfo))
        task.snooze_reason = req.reason
        return True

    task = _transition(caller, task_id, ("active",), "snooze", change, now)
    max_attempts = int((task.spec or {}).get("max_retries", 3)) + 1
    for fire in fenced:
        runs.fence(task.task_id, task.created_by, fire, version[0], max_attempts, now)
    dispatch.dispatch_if_soon(task, now)
    return task


def run_now(caller: Caller, task_id: str, data: Any, now: datetime) -> dict[str, Any]:
    req = parse(RunNowRequest, data)
    limit = settings().max_payload_bytes
    if req.input is not None and (size := stored_size(req.input)) > limit:
        raise TooLarge.field("input", f"is {size} bytes stored (escaped); the limit is {limit}")
    task = load(caller, task_id)
    if task.status not in ("active", "paused", "completed"):
        raise StateConflict(f"cannot run a task that is {task.status}")
    msg = RunMessage(
        task_id=task.task_id,
        run_id=runs.adhoc_run_id(epoch(now), "manual"),
        agent_id=task.created_by,
        trigger="run_now",
        scheduled_for=epoch(now),
        schedule_version=None,
    )
    max_attempts = int((task.spec or {}).get("max_retries", 3)) + 1
    doc = runs.new_doc(msg, status="queued", max_attempts=max_attempts, now=now, input=req.input)
    runs.put_new(msg, doc, now)
    try:
        wiring.client("sqs").send_message(
            QueueUrl=wiring.queue_url(band_for(int(task.priority or 5))), MessageBody=msg.to_json()
        )
    except Exception as e:
        runs.fail_unqueued(msg, now, f"the run could not be queued: {e}")
        raise
    return doc
