"""Dispatch: send each due fire to its priority band's run queue before it is due.

The tick runs every minute. For each shard of the sparse `due` index it takes a lease
(so two overlapping ticks never work the same shard), reads only tasks whose next fire
lies before the look-ahead horizon, and for each task: plans (pure), sends the run
messages with `DelaySeconds` so SQS releases them at the fire instant, then advances the
task's `due_at` with a write conditioned on the fire and schedule version it read.

Crash safety: nothing is advanced before its message is sent, so a crash at any point
leaves the fire due for the next tick. A crash between send and advance re-sends the same
run id next tick; the worker's conditional claim of the run record makes that copy a no-op.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from chalicelib import runs, schedules, wiring
from chalicelib.config import band_for, settings
from chalicelib.contracts import parse_timestamp
from chalicelib.errors import BadRequest
from chalicelib.log import logger
from chalicelib.models import KeyModel, TaskModel
from chalicelib.runs import RunMessage
from chalicelib.timefmt import epoch, from_epoch

MAX_DELAY = 900  # SQS's ceiling for DelaySeconds
SHARD_LEASE_SECONDS = 55


@dataclass(frozen=True)
class DueTask:
    task_id: str
    agent_id: str
    sched: dict[str, Any]
    schedule_version: int
    priority: int
    due_at: int


@dataclass(frozen=True)
class Send:
    message: RunMessage
    band: str


def delay_for(fire: int, now: float) -> int:
    """DelaySeconds for a fire, computed when the message is sent (not when the tick started,
    which may be seconds earlier). SQS counts whole seconds, so round down: the message shows
    up at most a second early and the worker waits out the fraction — never a second late."""
    return max(0, min(MAX_DELAY, math.floor(fire - now)))


@dataclass(frozen=True)
class Plan:
    """What one task's dispatch does: messages to send, fires to record as missed,
    and where `due_at` moves (None: nothing left to schedule)."""

    task_id: str
    expect_due: int
    schedule_version: int
    sends: tuple[Send, ...]
    missed: tuple[RunMessage, ...]
    next_due: int | None
    first_sent: int | None  # the earliest fire sent: the task's next execution until it starts
    missed_truncated: bool = False  # more fires were missed than are recorded (see plan_missed)


@dataclass
class TickReport:
    dispatched: int = 0
    skipped: int = 0
    shards: int = 0
    shards_busy: int = 0
    tasks: int = 0
    errors: list[str] = field(default_factory=list)


def plan(due: DueTask, schedule: schedules.Schedule, now: datetime, horizon: datetime) -> Plan:
    """Pure: the fires of one task to dispatch now, given its pending fire `due.due_at`."""
    first = from_epoch(due.due_at)
    grace = settings().lookahead_seconds
    missed = schedules.plan_missed(
        schedule, first, now, due.sched.get("misfire_policy") or "run_once", grace_seconds=grace
    )
    to_run: list[datetime] = list(missed.run)
    nxt = missed.next_after
    if not to_run and not missed.skipped:
        to_run, nxt = [first], schedules.next_fire(schedule, first)
    while nxt is not None and nxt <= horizon and len(to_run) < 200:
        to_run.append(nxt)
        nxt = schedules.next_fire(schedule, nxt)
    band = band_for(due.priority)
    sends = tuple(Send(_message(due, epoch(f)), band) for f in to_run)
    skipped = tuple(_message(due, epoch(f)) for f in missed.skipped)
    return Plan(
        due.task_id,
        due.due_at,
        due.schedule_version,
        sends,
        skipped,
        epoch(nxt) if nxt is not None else None,
        epoch(to_run[0]) if to_run else None,
        missed.skipped_truncated,
    )


def _message(due: DueTask, fire: int) -> RunMessage:
    return RunMessage(
        task_id=due.task_id,
        run_id=runs.scheduled_run_id(due.task_id, fire, due.schedule_version),
        agent_id=due.agent_id,
        trigger="schedule",
        scheduled_for=fire,
        schedule_version=due.schedule_version,
    )


def _due_of(item: TaskModel) -> DueTask:
    return DueTask(
        item.task_id,
        item.created_by,
        item.sched or {},
        int(item.schedule_version or 1),
        int(item.priority or 5),
        int(item.due_at or 0),
    )


def _schedule(due: DueTask, now: datetime) -> schedules.Schedule:
    return build_schedule(due.sched, due.task_id, now)


def shard_for(task_id: str) -> str:
    return str(int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % settings().due_shards)


def build_schedule(
    sched: dict[str, Any], task_id: str, now: datetime, *, check_past: bool = False
) -> schedules.Schedule:
    """The parsed schedule of a stored (or about to be stored) task."""
    try:
        return schedules.parse_schedule(
            sched["schedule_kind"],
            sched.get("schedule_expr"),
            sched.get("timezone") or "UTC",
            now=now,
            anchor=parse_timestamp(sched["anchor"], "anchor") if sched.get("anchor") else now,
            jitter_seconds=sched.get("jitter_seconds") or 0,
            jitter_seed=task_id,
            starts_at=parse_timestamp(sched["starts_at"], "starts_at") if sched.get("starts_at") else None,
            ends_at=parse_timestamp(sched["ends_at"], "ends_at") if sched.get("ends_at") else None,
            check_past=check_past,
        )
    except schedules.ScheduleError as e:
        raise BadRequest.field(e.field, e.message) from None


def first_fire(schedule: schedules.Schedule, now: datetime) -> datetime | None:
    # A `once` instant up to 60 s in the past is accepted and runs at once.
    after = now - timedelta(seconds=61) if schedule.kind == "once" else now
    return schedules.next_fire(schedule, after)


# ---- I/O -----------------------------------------------------------------------------------


def send_all(sends: list[Send]) -> set[str]:
    """Send in batches of 10 per band; returns the run ids SQS accepted."""
    sqs = wiring.client("sqs")
    by_band: dict[str, list[Send]] = defaultdict(list)
    for s in sends:
        by_band[s.band].append(s)
    ok: set[str] = set()
    for band, items in by_band.items():
        url = wiring.queue_url(band)
        for i in range(0, len(items), 10):
            chunk = items[i : i + 10]
            resp = sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(n),
                        "MessageBody": s.message.to_json(),
                        "DelaySeconds": delay_for(s.message.scheduled_for, wiring.now_precise().timestamp()),
                    }
                    for n, s in enumerate(chunk)
                ],
            )
            for entry in resp.get("Successful", []):
                ok.add(chunk[int(entry["Id"])].message.run_id)
            for entry in resp.get("Failed", []):
                logger.warning(
                    "send_failed", extra={"run_id": chunk[int(entry["Id"])].message.run_id, "code": entry.get("Code")}
                )
    return ok


def advance(p: Plan, into: TaskModel | None = None) -> bool:
    """Move the task past what was dispatched, only if nothing changed since we read it.
    `into` (optional) receives the item as written, so a caller holding it need not re-read."""
    t = into if into is not None else TaskModel(p.task_id)
    actions: list[Any] = []
    if p.next_due is None:
        actions += [TaskModel.due_at.remove(), TaskModel.due_shard.remove()]
        if not p.sends:  # every remaining fire was missed and skipped: nothing will run to complete it
            actions.append(TaskModel.status.set("completed"))
    else:
        actions.append(TaskModel.due_at.set(p.next_due))
    if p.first_sent is not None:
        actions.append(TaskModel.inflight_at.set(p.first_sent))
    try:
        t.update(
            actions=actions,
            condition=(TaskModel.due_at == p.expect_due) & (TaskModel.schedule_version == p.schedule_version),
        )
    except UpdateError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return False  # changed meanwhile: the new schedule version fences what we sent
        raise
    return True


def record_missed(p: Plan, now: datetime, max_attempts: int = 1) -> None:
    if p.missed_truncated:  # said out loud: nothing is dropped silently
        logger.warning("missed_fires_truncated", extra={"task_id": p.task_id, "recorded": len(p.missed)})
    for msg in p.missed:
        runs.put_new(
            msg, runs.new_doc(msg, status="skipped", skip_reason="missed", max_attempts=max_attempts, now=now), now
        )


def execute(plans: list[Plan], now: datetime, models: dict[str, TaskModel] | None = None) -> tuple[int, int]:
    """Do the I/O for a set of plans: record missed fires, then per band and ≤ 10 messages at
    a time send and advance, so a crash re-sends at most one batch. Returns (sent, skipped)."""
    for p in plans:
        record_missed(p, now)
    sent = 0
    by_band: dict[str, list[Plan]] = defaultdict(list)
    for p in plans:
        by_band[p.sends[0].band if p.sends else ""].append(p)
    for band, group in by_band.items():
        chunks: list[list[Plan]] = [[]]
        for p in group:  # ≤ 10 messages a chunk (a plan with more goes alone; send_all splits it)
            if chunks[-1] and sum(len(c.sends) for c in chunks[-1]) + len(p.sends) > 10:
                chunks.append([])
            chunks[-1].append(p)
        for chunk in chunks:
            ok = send_all([s for c in chunk for s in c.sends]) if band else set()
            for c in chunk:
                if all(s.message.run_id in ok for s in c.sends):
                    advance(c, (models or {}).get(c.task_id))
                    sent += len(c.sends)
    return sent, sum(len(p.missed) for p in plans)


def _acquire_shard(shard: int, holder: str, now: datetime) -> bool:
    lease = KeyModel(
        f"tick#shard#{shard}", holder=holder, until=epoch(now) + SHARD_LEASE_SECONDS, expires_at=now + timedelta(days=1)
    )
    try:
        lease.save(condition=KeyModel.key.does_not_exist() | (KeyModel.until < epoch(now)))
    except PutError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _release_shard(shard: int, holder: str) -> None:
    try:
        KeyModel(f"tick#shard#{shard}").delete(condition=KeyModel.holder == holder)
    except Exception:  # noqa: BLE001 - the lease expires by itself
        pass


def _tick_shard(shard: int, holder: str, now: datetime, horizon: datetime) -> TickReport:
    report = TickReport()
    if not _acquire_shard(shard, holder, now):
        report.shards_busy = 1
        return report
    report.shards = 1
    # Stop well before the lease ends: what is left stays due for the next tick, and no other
    # tick can take the shard while we still work it.
    stop_at = time.monotonic() + SHARD_LEASE_SECONDS - 10
    try:
        batch: list[Plan] = []
        for item in TaskModel.due_index.query(str(shard), TaskModel.due_at <= epoch(horizon)):
            due = _due_of(item)
            report.tasks += 1
            try:
                batch.append(plan(due, _schedule(due, now), now, horizon))
            except Exception as e:  # noqa: BLE001 - one broken task must not stop the shard
                report.errors.append(f"{due.task_id}: {e}")
                logger.exception("plan_failed", extra={"task_id": due.task_id})
            if len(batch) >= 50:
                sent, skipped = execute(batch, now)
                report.dispatched, report.skipped = report.dispatched + sent, report.skipped + skipped
                batch = []
                if time.monotonic() > stop_at:
                    logger.warning("tick_shard_out_of_time", extra={"shard": shard})
                    break
        if batch:
            sent, skipped = execute(batch, now)
            report.dispatched, report.skipped = report.dispatched + sent, report.skipped + skipped
    finally:
        _release_shard(shard, holder)
    return report


def run_tick(now: datetime) -> TickReport:
    """Dispatch every fire due before the next tick's look-ahead. Shards are worked in
    parallel, each under its own lease."""
    report = TickReport()
    horizon = now + timedelta(seconds=settings().lookahead_seconds)
    holder = uuid.uuid4().hex
    shards = range(settings().due_shards)
    with ThreadPoolExecutor(max_workers=min(8, len(shards)), thread_name_prefix="tick") as pool:
        for part in pool.map(lambda shard: _tick_shard(shard, holder, now, horizon), shards):
            report.dispatched += part.dispatched
            report.skipped += part.skipped
            report.shards += part.shards
            report.shards_busy += part.shards_busy
            report.tasks += part.tasks
            report.errors += part.errors
    logger.info(
        "tick",
        extra={
            "dispatched": report.dispatched,
            "skipped": report.skipped,
            "tasks": report.tasks,
            "shards_busy": report.shards_busy,
        },
    )
    return report


def dispatch_if_soon(task: TaskModel, now: datetime) -> int:
    """Dispatch-on-write: a task whose next fire falls before the next tick's look-ahead is
    dispatched now, so it is on time too. Returns the number of messages sent."""
    if task.status != "active" or task.due_at is None:
        return 0
    horizon = now + timedelta(seconds=settings().lookahead_seconds)
    if task.due_at > epoch(horizon):
        return 0
    due = _due_of(task)
    p = plan(due, _schedule(due, now), now, horizon)
    sent, _ = execute([p], now, {task.task_id: task})  # the advance writes the new state into `task`
    return sent


def schedule_next(task: TaskModel, fire: datetime | None) -> None:
    """Point an active task at its next fire: into the due index, or — nothing left of a
    finite schedule — `completed`. Event tasks have no fire and stay active."""
    if fire is not None:
        task.due_shard, task.due_at = shard_for(task.task_id), epoch(fire)
        return
    task.due_shard = task.due_at = None
    if task.schedule_kind != "event":
        task.status = "completed"


def pending_fire(task: TaskModel, now: datetime) -> int | None:
    """The task's next execution not yet started: a dispatched fire still in the future,
    else the next undispatched one."""
    if task.status != "active":
        return None
    if task.inflight_at is not None and task.inflight_at > epoch(now):
        return int(task.inflight_at)
    return int(task.due_at) if task.due_at is not None else None


def next_fire_from(task: TaskModel, now: datetime) -> datetime | None:
    return schedules.next_fire(build_schedule(task.sched or {}, task.task_id, now), now)
