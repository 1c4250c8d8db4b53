"""Task lifecycle: pause, resume, cancel, snooze, run_now.

Each transition is checked against the task's status (409 otherwise) and written only if the
task is unchanged since it was read (`TaskStore.save_if_unchanged`), re-reading on a lost race,
so two concurrent requests can never both apply to the same state. Pause and cancel bump the
schedule version: runs already dispatched under the old version are skipped by the worker
(fencing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from chalicelib import dispatch
from chalicelib.dispatch import budgets
from chalicelib.domain.contracts import RunNowRequest, SnoozeRequest
from chalicelib.domain.errors import StateConflict, TooLarge
from chalicelib.domain.records import ScheduleKind, Task, TaskStatus, Trigger
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch, iso
from chalicelib.domain.validation import parse, stored_size
from chalicelib.platform.config import band_for, settings
from chalicelib.platform.log import logger
from chalicelib.services.agents import Caller
from chalicelib.services.tasks import load
from chalicelib.store import runs, stores

Change = Callable[[Task], Task | None]  # the changed task; None = nothing to do (idempotent no-op)
ACTIVE, PAUSED, CANCELED, COMPLETED = TaskStatus.ACTIVE, TaskStatus.PAUSED, TaskStatus.CANCELED, TaskStatus.COMPLETED


def _transition(
    caller: Caller,
    task_id: str,
    allowed: tuple[TaskStatus, ...],
    action: str,
    change: Change,
    now: datetime,
    *,
    on_saved: Callable[[Task], None] | None = None,
) -> Task:
    for _ in range(8):
        task = load(caller, task_id)
        if task.status not in allowed:
            raise StateConflict(f"cannot {action} a task that is {task.status}")
        new = change(task)
        if new is None:
            return task
        saved = stores().tasks.save_if_unchanged(task, new.evolve(updated_at=iso(now)))
        if saved is None:
            continue  # changed since it was read: decide again on what it is now
        if on_saved is not None:
            on_saved(saved)
        return saved
    raise StateConflict(f"the task is being changed concurrently; retry the {action}")


def _unscheduled(task: Task) -> Task:
    return task.evolve(
        schedule_version=task.schedule_version + 1,
        due_shard=None,
        due_at=None,
        snoozed_until=None,
        snooze_reason=None,
    )


def _stop(status: TaskStatus) -> Change:
    """The change that stops a task's schedule into `status` (a no-op if already there)."""

    def change(task: Task) -> Task | None:
        if task.status is status:
            return None
        return _unscheduled(task).evolve(status=status)

    return change


def pause(caller: Caller, task_id: str, now: datetime) -> Task:
    return _transition(caller, task_id, (ACTIVE, PAUSED), "pause", _stop(PAUSED), now)


def resume(caller: Caller, task_id: str, now: datetime) -> Task:
    def change(task: Task) -> Task | None:
        if task.status is ACTIVE:
            return None
        # Missed occurrences while paused are not run: the next fire is computed from now.
        return dispatch.schedule_next(_unscheduled(task).evolve(status=ACTIVE), dispatch.next_fire_from(task, now))

    return _dispatched(_transition(caller, task_id, (PAUSED, ACTIVE), "resume", change, now), now)


def cancel(caller: Caller, task_id: str, now: datetime) -> Task:
    def release_slot(task: Task) -> None:
        # A canceled task no longer counts against its agent's quota (best effort: a crash
        # here leaves the count one too high, never too low).
        stores().agents.release_task_slot(task.created_by)

    every = (ACTIVE, PAUSED, COMPLETED, CANCELED)
    return _transition(caller, task_id, every, "cancel", _stop(CANCELED), now, on_saved=release_slot)


def snooze(caller: Caller, task_id: str, data: Any, now: datetime) -> Task:
    """Move the next scheduled execution later; the cadence after it is unchanged.

    The schedule restarts at the moved instant (the tick drops the pending fires before it).
    Fires it skips that may already be on a queue are stopped up front (`runs.fence_unstarted`:
    recorded `skipped`/`superseded`, or so settled while a delivery waits for a concurrency
    slot), which their messages then find: the schedule version is not bumped, so retries and
    waiting runs of earlier fires are unaffected. If the execution being moved has already
    started, it is not run again at the moved instant: that run is recorded superseded."""
    req = parse(SnoozeRequest, data)
    fenced: list[int] = []
    moved_to: list[int] = []

    def change(task: Task) -> Task | None:
        fenced.clear()
        moved_to.clear()
        if task.schedule.kind is ScheduleKind.EVENT:  # no schedule: its event runs wait until the snooze ends
            until = datetime.fromtimestamp(now.timestamp() + req.delay_seconds, tz=now.tzinfo)
            return task.evolve(snoozed_until=iso(until), snooze_reason=req.reason)
        pending = dispatch.pending_fire(task, now)
        if pending is None:
            raise StateConflict("the task has no scheduled execution to snooze")
        new = pending + req.delay_seconds
        fenced.extend(dispatch.possibly_sent(task, pending, new, now))
        moved_to.append(new)
        return task.evolve(
            due_shard=dispatch.shard_for(task.task_id),
            due_at=new,
            snoozed_until=iso(datetime.fromtimestamp(new, tz=now.tzinfo)),
            snooze_reason=req.reason,
        )

    task = _transition(caller, task_id, (ACTIVE,), "snooze", change, now)
    tid, agent, version, attempts = task.task_id, task.created_by, task.schedule_version, task.definition.max_attempts
    for i, fire in enumerate(fenced):
        if not runs.fence_unstarted(tid, agent, fire, version, attempts, now) and i == 0:
            # The execution being moved (the pending fire) started already: it ran, so the
            # moved instant must not run it a second time.
            runs.fence(tid, agent, moved_to[0], version, attempts, now)
    return _dispatched(task, now)


def _dispatched(task: Task, now: datetime) -> Task:
    """Dispatch-on-write, and the task as it then stands."""
    if dispatch.dispatch_if_soon(task, now):
        return stores().tasks.get(task.task_id) or task
    return task


def run_now(caller: Caller, task_id: str, data: Any, now: datetime) -> dict[str, Any]:
    req = parse(RunNowRequest, data)
    limit = settings().max_payload_bytes
    if req.input is not None and (size := stored_size(req.input)) > limit:
        raise TooLarge.field("input", f"is {size} bytes stored (escaped); the limit is {limit}")
    task = load(caller, task_id)
    if task.status not in (ACTIVE, PAUSED, COMPLETED):
        raise StateConflict(f"cannot run a task that is {task.status}")
    agent = stores().agents.get(task.created_by)
    limits = budgets.limits_of(agent)
    msg = RunMessage(
        task_id=task.task_id,
        run_id=runs.adhoc_run_id(epoch(now), "manual"),
        agent_id=task.created_by,
        trigger=str(Trigger.RUN_NOW),
        scheduled_for=epoch(now),
        schedule_version=None,
        in_flight=limits.runs_in_flight,
    )
    admitted = budgets.take(agent, 1, now) == 1
    doc = runs.first_doc(msg, admitted=admitted, max_attempts=task.definition.max_attempts, now=now, input=req.input)
    runs.put_new(msg, doc, now)
    if not admitted:
        # Over the agent's runs a minute: recorded and answered as a skipped run (visible in its
        # history, like a scheduled fire over budget), not refused.
        logger.warning("runs_over_budget", extra={"agent_id": task.created_by, "skipped": 1, "at": "run_now"})
        return doc
    try:
        accepted = dispatch.send_all([dispatch.Send(msg, band_for(task.definition.priority))])
    except Exception as e:
        runs.fail_unqueued(msg, now, f"the run could not be queued: {e}")
        raise
    if msg.run_id not in accepted:
        runs.fail_unqueued(msg, now, "the run could not be queued: SQS did not accept the run message")
        raise RuntimeError("the run could not be queued")
    return doc
