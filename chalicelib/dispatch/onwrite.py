"""What the API's writes ask of dispatch: dispatch-on-write (a (re)started schedule whose first
fire comes before the next tick's look-ahead goes out now, so it is on time too), and the
fence after a schedule change (an instant both versions fire at runs once)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from chalicelib.dispatch import budgets
from chalicelib.dispatch.plan import WRITE_MARGIN_SECONDS, Plan, build_schedule, fenced_fires, next_fire, plan
from chalicelib.dispatch.settle import clear_start_of, execute, record_skipped
from chalicelib.domain import schedules
from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.records import RunStatus, SkipReason, Task, TaskStatus
from chalicelib.domain.runs import scheduled_run_id
from chalicelib.domain.timefmt import epoch, from_epoch
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.store import runs, stores
from chalicelib.store.ports import DueFire


def dispatch_if_soon(task: Task, now: datetime) -> int:
    """Dispatch a (re)started schedule now if its first fire falls before the next tick's
    look-ahead. Returns the number of messages sent (the stored task changed: read it again)."""
    if task.status != TaskStatus.ACTIVE or task.due_at is None:
        return 0
    horizon = now + timedelta(seconds=settings().lookahead_seconds + WRITE_MARGIN_SECONDS)
    if task.due_at > epoch(horizon):
        return 0
    due = DueFire(
        task.task_id, task.created_by, task.schedule, task.schedule_version, task.definition.priority, task.due_at
    )
    try:
        p = plan(due, now, horizon)
    except (schedules.ScheduleError, InvalidSchedule):
        return 0  # the start stays in the index: the tick records why it cannot be computed
    p = _within_budget(p, task.created_by, now)
    # If this call was slow, a tick may have worked past the entry written here before it
    # existed: then the start stays in the index, and the next tick dispatches it again.
    done = execute([p], now, clear_start=False)
    if not done.unsent and wiring.now_precise().timestamp() - now.timestamp() < WRITE_MARGIN_SECONDS / 2:
        clear_start_of(p)
    return done.sent


def _within_budget(p: Plan, agent_id: str, now: datetime) -> Plan:
    """One charge of the agent's run budget for the plan's fires: the earliest go, the rest are
    recorded `skipped` / `budget_exceeded`."""
    if not p.sends:
        return p
    agent = stores().agents.get(agent_id)
    admitted = budgets.take(agent, len(p.sends), now)
    if admitted < len(p.sends):
        over = {s.message.run_id for s in sorted(p.sends, key=lambda s: s.message.scheduled_for)[admitted:]}
        p = record_skipped(p, over, SkipReason.BUDGET_EXCEEDED, now)
        logger.warning("runs_over_budget", extra={"agent_id": agent_id, "skipped": len(over), "at": "write"})
    limits = budgets.limits_of(agent)
    return replace(p, sends=tuple(replace(s, message=budgets.stamped(s.message, limits)) for s in p.sends))


def fence_change(old: Task, new: Task, now: datetime) -> None:
    """After a schedule change: an instant both versions fire at, near now, runs once.

    The old version's run for it may be starting this very second (the change's `now` is
    whole seconds; a `once` task looks back 60 s). Recording that run superseded first stops it;
    if it already started, the new version's run for the instant is recorded superseded instead
    — and a schedule with nothing after it completes."""
    both = fenced_fires(old, new, now)
    if not both:
        return
    new_schedule = build_schedule(new.schedule, new.task_id, now)
    max_attempts = new.definition.max_attempts
    for fire in both:
        if runs.fence(new.task_id, new.created_by, fire, old.schedule_version, max_attempts, now):
            continue  # the old version's run for it can no longer start
        ran = runs.get(new.task_id, scheduled_run_id(new.task_id, fire, old.schedule_version), now)
        if ran is None or ran.status in (RunStatus.SKIPPED, RunStatus.QUEUED):
            continue  # it never started: the new version runs the instant
        runs.fence(new.task_id, new.created_by, fire, new.schedule_version, max_attempts, now)
        if next_fire(new_schedule, from_epoch(fire)) is None:
            stores().due_tasks.complete(new.task_id, new.schedule_version)
