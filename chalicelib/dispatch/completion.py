"""A schedule's last run ends it: a `once` task, or an rrule or cron whose occurrences are
exhausted (COUNT/UNTIL, ends_at), completes after its last scheduled run finishes (succeeded,
failed or skipped), whoever finished it: the worker, or a sweep (dead letters, stuck runs)."""

from __future__ import annotations

from datetime import datetime

from chalicelib.dispatch.plan import build_schedule
from chalicelib.domain import schedules
from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.records import Run, ScheduleKind, Task, Trigger
from chalicelib.domain.runs import RunMessage, scheduled_run_id
from chalicelib.domain.timefmt import from_epoch
from chalicelib.store import stores


def complete_if_last(task: Task, msg: RunMessage, now: datetime) -> bool:
    """Complete the task if `msg`'s fire was its schedule's last. Decided from the schedule
    itself, not from dispatch state, which the tick may not have advanced yet."""
    if msg.trigger != Trigger.SCHEDULE or msg.schedule_version is None or task.schedule.kind is ScheduleKind.EVENT:
        return False
    try:
        schedule = build_schedule(task.schedule, task.task_id, now)
        if schedules.next_fire(schedule, from_epoch(msg.scheduled_for)) is not None:
            return False
    except (schedules.ScheduleError, InvalidSchedule):
        return False  # not computable: the tick pauses the task with a schedule_error
    # Rescheduled, paused or canceled meanwhile: not complete (the store's condition says so).
    return stores().due_tasks.complete(task.task_id, msg.schedule_version)


def complete_after_sweep(run: Run, now: datetime) -> bool:
    """`complete_if_last` for a run a sweep finished, read from its record: a scheduled run of
    the task's current schedule version (its id derives from it), or nothing to do."""
    fire = run.doc.get("scheduled_for")
    if run.trigger is not Trigger.SCHEDULE or not isinstance(fire, str):
        return False
    task = stores().tasks.get_many([run.task_id]).get(run.task_id)  # the tick's role batch-reads tasks
    if task is None:
        return False
    at = int(datetime.fromisoformat(fire.replace("Z", "+00:00")).timestamp())
    if scheduled_run_id(task.task_id, at, task.schedule_version) != run.run_id:
        return False  # an older version's fire: the schedule it belonged to is gone
    msg = RunMessage(task.task_id, run.run_id, run.agent_id, str(Trigger.SCHEDULE), at, task.schedule_version)
    return complete_if_last(task, msg, now)
