"""Planning a dispatch: which fires of a task go out now, where its schedule goes next, which
fires a change may meet on a queue. Pure: every function takes `now` and reads no clock and
no storage, so DST, misfires and fencing are tested without sleeping."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import runs, schedules
from chalicelib.domain.errors import InvalidInput, InvalidSchedule
from chalicelib.domain.records import Schedule, ScheduleKind, Task, TaskStatus, Trigger
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch, from_epoch
from chalicelib.platform.config import band_for, settings
from chalicelib.store.ports import DueEntry, DueFire

MAX_DELAY = 900  # SQS's ceiling for DelaySeconds
# Dispatch-on-write plans this far past the tick's look-ahead, so the entry it writes lies
# beyond any horizon a tick could have worked meanwhile (an API call lasts at most 30 s).
WRITE_MARGIN_SECONDS = 60
MAX_FIRES = 200  # per task and plan: a schedule firing more often catches up over several ticks


@dataclass(frozen=True)
class Send:
    message: RunMessage
    band: str


@dataclass(frozen=True)
class Plan:
    """What one task's dispatch does: messages to send, fires to record as missed,
    and where its schedule goes next (None: nothing left to schedule)."""

    task_id: str
    expect_due: int
    schedule_version: int
    sends: tuple[Send, ...]
    missed: tuple[RunMessage, ...]
    next_due: int | None
    missed_truncated: bool = False  # more fires were missed than are recorded (see plan_missed)
    start: bool = True  # from the task's `due` index (a (re)started schedule), else a due-table entry

    @property
    def exhausted(self) -> bool:
        """Every remaining fire was missed and skipped: the schedule completes."""
        return self.next_due is None and not self.sends


def delay_for(fire: int, now: float) -> int:
    """DelaySeconds for a fire, computed when the message is sent (not when the tick started,
    which may be seconds earlier). SQS counts whole seconds, so round down: the message shows
    up at most a second early and the worker waits out the fraction — never a second late."""
    return max(0, min(MAX_DELAY, math.floor(fire - now)))


def plan(due: DueFire, now: datetime, horizon: datetime, *, start: bool = True) -> Plan:
    """The fires of one task to dispatch now, given its pending fire `due.due_at`. Raises
    InvalidSchedule or ScheduleError when the stored schedule cannot be computed."""
    schedule = build_schedule(due.schedule, due.task_id, now)
    first = from_epoch(due.due_at)
    missed = schedules.plan_missed(
        schedule, first, now, due.schedule.misfire_policy, grace_seconds=settings().lookahead_seconds
    )
    to_run: list[datetime] = list(missed.run)
    nxt = missed.next_after
    if not to_run and not missed.skipped:
        to_run, nxt = [first], schedules.next_fire(schedule, first)
    while nxt is not None and nxt <= horizon and len(to_run) < MAX_FIRES:
        to_run.append(nxt)
        nxt = schedules.next_fire(schedule, nxt)
    band = band_for(due.priority)
    return Plan(
        due.task_id,
        due.due_at,
        due.schedule_version,
        tuple(Send(message(due, epoch(f)), band) for f in to_run),
        tuple(message(due, epoch(f)) for f in missed.skipped),
        epoch(nxt) if nxt is not None else None,
        missed.skipped_truncated,
        start,
    )


def message(due: DueFire, fire: int) -> RunMessage:
    return RunMessage(
        task_id=due.task_id,
        run_id=runs.scheduled_run_id(due.task_id, fire, due.schedule_version),
        agent_id=due.agent_id,
        trigger=Trigger.SCHEDULE.value,
        scheduled_for=fire,
        schedule_version=due.schedule_version,
    )


def entry_fire(entry: DueEntry, task: Task) -> DueFire:
    """A running schedule's due-table entry, with its task's schedule and priority."""
    return DueFire(
        task.task_id, task.created_by, task.schedule, entry.schedule_version, task.definition.priority, entry.fire
    )


def shard_for(task_id: str) -> str:
    return str(int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % settings().due_shards)


def build_schedule(
    schedule: Schedule | Mapping[str, Any], task_id: str, now: datetime, *, check_past: bool = False
) -> schedules.Schedule:
    """The computable schedule of a stored (or about to be stored) task. A mapping is the
    API's schedule fields (`schedule_kind`, `schedule_expr`, … and `anchor`)."""
    from chalicelib.domain.contracts import parse_timestamp  # pydantic's models: not on a quiet tick's cold start

    s = schedule if isinstance(schedule, Schedule) else Schedule.from_fields(schedule)
    try:
        return schedules.parse_schedule(
            s.kind.value,
            s.expr,
            s.timezone or "UTC",
            now=now,
            anchor=parse_timestamp(s.anchor, "anchor") if s.anchor else now,
            jitter_seconds=s.jitter_seconds or 0,
            jitter_seed=task_id,
            starts_at=parse_timestamp(s.starts_at, "starts_at") if s.starts_at else None,
            ends_at=parse_timestamp(s.ends_at, "ends_at") if s.ends_at else None,
            check_past=check_past,
        )
    except schedules.ScheduleError as e:
        raise InvalidSchedule.field(e.field, e.message) from None
    except InvalidInput as e:  # a stored bound that no longer parses
        raise InvalidSchedule(e.detail, e.errors) from None


def first_fire(schedule: schedules.Schedule, now: datetime) -> datetime | None:
    # A `once` instant up to 60 s in the past is accepted and runs at once.
    after = now - timedelta(seconds=61) if schedule.kind == "once" else now
    return next_fire(schedule, after)


def next_fire(schedule: schedules.Schedule, after: datetime) -> datetime | None:
    """schedules.next_fire for a request: a schedule too costly to compute is a 400 on its field."""
    try:
        return schedules.next_fire(schedule, after)
    except schedules.ScheduleError as e:
        raise InvalidSchedule.field(e.field, e.message) from None


def next_fire_from(task: Task, now: datetime) -> datetime | None:
    return next_fire(build_schedule(task.schedule, task.task_id, now), now)


def scheduled(task: Task, fire: datetime | None) -> Task:
    """An active task pointed at its next fire: into the due index, or — nothing left of a
    finite schedule — `completed`. Event tasks have no fire and stay active. A schedule that
    starts again has no `schedule_error` any more."""
    if fire is not None:
        return task.evolve(schedule_error=None, due_shard=shard_for(task.task_id), due_at=epoch(fire))
    status = task.status if task.schedule.kind is ScheduleKind.EVENT else TaskStatus.COMPLETED
    return task.evolve(schedule_error=None, due_shard=None, due_at=None, status=status)


def snoozed_epoch(task: Task) -> int | None:
    if not task.snoozed_until:
        return None
    from chalicelib.domain.contracts import parse_timestamp

    return epoch(parse_timestamp(task.snoozed_until, "snoozed_until"))


def current(entry: DueEntry, task: Task | None) -> bool:
    """Whether a due-table entry still belongs to its task's schedule: an entry outlives a
    pause, cancel or schedule change (the version moved on) and a snooze (it moved the fires
    before `snoozed_until` to a restart at that instant)."""
    if task is None or task.status != TaskStatus.ACTIVE:
        return False
    if task.schedule_version != entry.schedule_version:
        return False
    snoozed = snoozed_epoch(task)
    return snoozed is None or entry.fire >= snoozed


def pending_fire(task: Task, now: datetime) -> int | None:
    """The task's next execution not yet started: a (re)started schedule's first fire, a
    snoozed fire, else the schedule's next fire after now."""
    if task.status != TaskStatus.ACTIVE:
        return None
    if task.due_at is not None:
        return task.due_at
    snoozed = snoozed_epoch(task)
    if snoozed is not None and snoozed > now.timestamp():
        return snoozed
    try:
        nxt = next_fire_from(task, now)
    except InvalidSchedule:  # a stored schedule that no longer computes: the tick pauses the task
        return None
    return epoch(nxt) if nxt is not None else None


def reach(now: datetime) -> int:
    """The furthest fire a tick or dispatch-on-write may have sent by `now`."""
    return epoch(now) + settings().lookahead_seconds + WRITE_MARGIN_SECONDS


def fires_between(schedule: schedules.Schedule, lo: int, hi: int) -> list[int]:
    """The schedule's fires in [lo, hi], at most MAX_FIRES."""
    out: list[int] = []
    nxt = next_fire(schedule, from_epoch(lo - 1))
    while nxt is not None and epoch(nxt) <= hi and len(out) < MAX_FIRES:
        out.append(epoch(nxt))
        nxt = next_fire(schedule, nxt)
    return out


def possibly_sent(task: Task, first: int, until: int, now: datetime) -> list[int]:
    """`first` (the pending fire, maybe a snoozed instant) and the fires after it, before
    `until`, that a tick or dispatch-on-write may already have sent."""
    furthest = reach(now)
    if first > furthest:
        return []
    later = fires_between(build_schedule(task.schedule, task.task_id, now), first + 1, furthest)
    return [first, *(f for f in later if f < until)]


def fenced_fires(old: Task, new: Task, now: datetime) -> list[int]:
    """After a schedule change: the instants near now that both versions fire at (each must
    run once, not once per version)."""
    if old.status not in (TaskStatus.ACTIVE, TaskStatus.COMPLETED) or new.status != TaskStatus.ACTIVE:
        return []
    lo, hi = epoch(now) - 61, reach(now)
    both = set(fires_between(build_schedule(old.schedule, old.task_id, now), lo, hi))
    both &= set(fires_between(build_schedule(new.schedule, new.task_id, now), lo, hi))
    return sorted(both)
