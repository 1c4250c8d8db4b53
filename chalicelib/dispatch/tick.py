"""Dispatch: send each due fire to its priority band's run queue before it is due.

A running schedule keeps exactly one pending entry in the `due` table: the next fire
after those already sent, keyed by (shard, "<fire>#<task>"). The tick runs every minute;
for each shard it takes a lease, reads the entries between the shard's watermark and the
look-ahead horizon, checks each against its task (status, schedule version, snooze), sends
the run messages with `DelaySeconds` so SQS releases them at the fire instant, writes each
task's next entry, and moves the watermark. A fire costs one small write; entries are never
moved or deleted (TTL removes them), where moving a GSI key costs three writes a fire.

A schedule that (re)starts — create, schedule update, resume, snooze — is written into the
task item's sparse `due` index in the same write as the change itself, so no crash can lose
it; its first dispatch moves it into the `due` table and clears the index attributes.

Crash safety: a fire's next entry is written only after its messages were sent, and the
watermark (or the index attributes) moves only after that, so a crash at any point leaves
the fire to the next tick. A crash after sending re-sends the same run ids next tick; the
worker's conditional claim of the run record makes those copies no-ops.
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

from chalicelib.domain import schedules
from chalicelib.domain.errors import InvalidInput, InvalidSchedule
from chalicelib.domain.timefmt import epoch, from_epoch, iso
from chalicelib.platform import wiring
from chalicelib.platform.config import band_for, settings
from chalicelib.platform.log import failure, logger
from chalicelib.services import runs
from chalicelib.services.runs import RunMessage
from chalicelib.store import counters
from chalicelib.store.models import DueModel, KeyModel, TaskModel

MAX_DELAY = 900  # SQS's ceiling for DelaySeconds
SHARD_LEASE_SECONDS = 55
# Dispatch-on-write plans this far past the tick's look-ahead, so the entry it writes lies
# beyond any horizon a tick could have worked meanwhile (an API call lasts at most 30 s).
WRITE_MARGIN_SECONDS = 60
ENTRY_TTL = timedelta(days=14)  # as long as SQS keeps a message; the tick works entries long before


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
    missed_truncated: bool = False  # more fires were missed than are recorded (see plan_missed)
    start: bool = True  # from the task's `due` index (a (re)started schedule), else a due-table entry


@dataclass
class TickReport:
    dispatched: int = 0
    skipped: int = 0
    shards: int = 0
    shards_busy: int = 0
    tasks: int = 0
    stale: int = 0  # due-table entries of paused, canceled, changed or snoozed schedules: dropped
    errors: list[str] = field(default_factory=list)


def plan(due: DueTask, schedule: schedules.Schedule, now: datetime, horizon: datetime, *, start: bool = True) -> Plan:
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
        missed.skipped_truncated,
        start,
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
    from chalicelib.domain.contracts import parse_timestamp  # pydantic's models: not on a quiet tick's cold start

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


def slot_of(fire: int, task_id: str) -> str:
    return f"{fire:010d}#{task_id}"


def put_entry(task_id: str, fire: int, schedule_version: int) -> None:
    """The schedule's next pending fire. Idempotent: a repeat writes the same item. Only
    forward: two versions of a schedule can name the same slot (a change that keeps the
    cadence), and a tick still working from the old version must not overwrite the entry
    the new one wrote — the tick would drop it as stale and the schedule would stop."""
    try:
        DueModel(
            shard_for(task_id),
            slot_of(fire, task_id),
            task_id=task_id,
            fire=fire,
            schedule_version=schedule_version,
            expires_at=from_epoch(fire) + ENTRY_TTL,
        ).save(condition=DueModel.slot.does_not_exist() | (DueModel.schedule_version <= schedule_version))
    except PutError as e:
        if e.cause_response_code != "ConditionalCheckFailedException":
            raise  # otherwise a newer version holds the slot: it dispatches that fire


def settle(p: Plan, into: TaskModel | None = None, *, clear_start: bool = True) -> bool:
    """After a plan's messages were sent: write the schedule's next entry; then a started
    schedule leaves the task's index (unless `clear_start` is False), and a schedule with
    nothing left to send completes. `into` (optional) receives the item as written."""
    if p.next_due is not None:
        put_entry(p.task_id, p.next_due, p.schedule_version)
    if p.start:
        return clear_start_of(p, into) if clear_start else True
    if p.next_due is None and not p.sends:  # every remaining fire was missed and skipped
        return _update(
            TaskModel(p.task_id),
            [TaskModel.status.set("completed")],
            (TaskModel.schedule_version == p.schedule_version) & (TaskModel.status == "active"),
        )
    return True


def clear_start_of(p: Plan, into: TaskModel | None = None) -> bool:
    """Take a dispatched start out of the task's index, only if nothing changed since we read it."""
    actions: list[Any] = [TaskModel.due_at.remove(), TaskModel.due_shard.remove()]
    if p.next_due is None and not p.sends:  # every remaining fire was missed and skipped
        actions.append(TaskModel.status.set("completed"))
    cond = (TaskModel.due_at == p.expect_due) & (TaskModel.schedule_version == p.schedule_version)
    return _update(into if into is not None else TaskModel(p.task_id), actions, cond)


def _update(t: TaskModel, actions: list[Any], cond: Any) -> bool:
    try:
        t.update(actions=actions, condition=cond)
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


def execute(
    plans: list[Plan], now: datetime, models: dict[str, TaskModel] | None = None, *, clear_start: bool = True
) -> tuple[int, int, set[str]]:
    """Do the I/O for a set of plans: record missed fires, then per band and ≤ 10 messages at
    a time send and settle, so a crash re-sends at most one batch.
    Returns (sent, skipped, ids of the tasks whose messages SQS did not all accept)."""
    for p in plans:
        record_missed(p, now)
    sent = 0
    unsent: set[str] = set()
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
                    settle(c, (models or {}).get(c.task_id), clear_start=clear_start)
                    sent += len(c.sends)
                else:
                    unsent.add(c.task_id)
    return sent, sum(len(p.missed) for p in plans), unsent


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


def _watermark(shard: int) -> str | None:
    try:
        return KeyModel.get(f"tick#through#{shard}", consistent_read=True).through
    except KeyModel.DoesNotExist:
        return None


def _save_watermark(shard: int, through: str) -> None:
    """Only forward (no TTL: losing it would make the tick re-read old entries)."""
    try:
        KeyModel(f"tick#through#{shard}", through=through).save(
            condition=KeyModel.key.does_not_exist() | (KeyModel.through < through)
        )
    except PutError as e:
        if e.cause_response_code != "ConditionalCheckFailedException":
            raise


def _snoozed_epoch(task: TaskModel) -> int | None:
    if not task.snoozed_until:
        return None
    from chalicelib.domain.contracts import parse_timestamp

    return epoch(parse_timestamp(task.snoozed_until, "snoozed_until"))


def current(entry: DueModel, task: TaskModel | None) -> bool:
    """Whether a due-table entry still belongs to its task's schedule: an entry outlives a
    pause, cancel or schedule change (the version moved on) and a snooze (it moved the fires
    before `snoozed_until` to a restart at that instant)."""
    if task is None or task.status != "active":
        return False
    if int(task.schedule_version or 1) != int(entry.schedule_version):
        return False
    snoozed = _snoozed_epoch(task)
    return snoozed is None or int(entry.fire) >= snoozed


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.stop_at = time.monotonic() + seconds

    def spent(self) -> bool:
        return time.monotonic() > self.stop_at


def _tick_starts(shard: int, now: datetime, horizon: datetime, budget: _Budget, report: TickReport) -> None:
    """Schedules (re)started by the API and not yet dispatched: the task's `due` index."""
    batch: list[Plan] = []
    for item in TaskModel.due_index.query(str(shard), TaskModel.due_at <= epoch(horizon)):
        due = _due_of(item)
        report.tasks += 1
        try:
            batch.append(plan(due, _schedule(due, now), now, horizon))
        except Exception as e:  # noqa: BLE001 - one broken task must not stop the shard
            _schedule_failed(due, e, now, report)
        if len(batch) >= 50:
            _run(batch, now, report)
            batch = []
            if budget.spent():
                return
    if batch:
        _run(batch, now, report)


def _schedule_failed(due: DueTask, error: Exception, now: datetime, report: TickReport) -> None:
    """A stored schedule that cannot be computed (it no longer parses, or a fire takes more
    than the engine's work budget) is never dropped silently: its pending fire gets a `failed`
    run record whose error says why, and the task is paused with a `schedule_error`, so its
    agent sees both (docs/schedules.md). Planning is pure, so any error here would repeat on
    every tick. The rest of the shard carries on."""
    reason = error.message if isinstance(error, schedules.ScheduleError) else str(error)
    if isinstance(error, InvalidInput) and error.errors:
        reason = "; ".join(f"{e.field}: {e.message}" for e in error.errors)
    reason = reason or type(error).__name__
    report.errors.append(f"{due.task_id}: {reason}")
    logger.warning("schedule_failed", extra={"task_id": due.task_id, "reason": reason[:500]})
    try:
        msg = _message(due, due.due_at)
        doc = runs.new_doc(msg, status="failed", max_attempts=1, now=now)
        doc.update(finished_at=iso(now), error={"type": "schedule_error", "message": reason[:1000], "step": None})
        counters.count(msg.task_id, msg.run_id, "failed", doc["finished_at"])  # before the final record (counters.py)
        runs.put_new(msg, doc, now)  # the fire's own run id: a repeated tick writes it once
        _update(
            TaskModel(due.task_id),
            [
                TaskModel.status.set("paused"),
                TaskModel.schedule_error.set(f"{iso(now)}: {reason[:1000]}"),
                TaskModel.due_at.remove(),
                TaskModel.due_shard.remove(),
            ],
            (TaskModel.schedule_version == due.schedule_version) & (TaskModel.status == "active"),
        )
    except Exception as exc:  # noqa: BLE001 - the shard goes on; the next tick retries this task
        logger.error("schedule_failed_not_recorded", extra={"task_id": due.task_id, **failure(exc)})


def _run(plans: list[Plan], now: datetime, report: TickReport) -> set[str]:
    sent, skipped, unsent = execute(plans, now)
    report.dispatched, report.skipped = report.dispatched + sent, report.skipped + skipped
    return unsent


def _tick_entries(shard: int, now: datetime, horizon: datetime, budget: _Budget, report: TickReport) -> None:
    """Running schedules: the due-table entries after the shard's watermark, up to the horizon."""
    mark = _watermark(shard)
    upper = slot_of(epoch(horizon), "~")  # after every task id at the horizon's second
    if mark is not None and mark >= upper:
        return  # worked up to here already (a tick with an earlier clock)
    cond = DueModel.slot <= upper if mark is None else DueModel.slot.between(mark, upper)
    page: list[DueModel] = []

    def work(entries: list[DueModel]) -> str | None:
        """Dispatch a page; returns the slot the watermark may move to (None: not past any)."""
        tasks = {t.task_id: t for t in TaskModel.batch_get({e.task_id for e in entries})}
        plans: list[Plan] = []
        for e in entries:
            task = tasks.get(e.task_id)
            if not current(e, task):
                report.stale += 1
                continue
            assert task is not None
            report.tasks += 1
            due = DueTask(
                task.task_id,
                task.created_by,
                task.sched or {},
                int(e.schedule_version),
                int(task.priority or 5),
                int(e.fire),
            )
            try:
                plans.append(plan(due, _schedule(due, now), now, horizon, start=False))
            except Exception as exc:  # noqa: BLE001 - one broken task must not stop the shard
                _schedule_failed(due, exc, now, report)
        unsent = _run(plans, now, report)
        # Passed entries include stale ones and ones whose schedule failed (their task is paused
        # with a schedule_error); the watermark stops before the first entry whose messages SQS
        # did not accept.
        through = None
        for e in entries:
            if e.task_id in unsent:
                break
            through = e.slot
        return through

    pages = 0

    def done(entries: list[DueModel]) -> bool:
        """Work a page; False: stop here for this tick. The watermark moves when the tick
        stops, and every 10 pages of a long catch-up, so a crash re-sends little."""
        nonlocal pages
        pages += 1
        through = work(entries)
        stop = through != entries[-1].slot or budget.spent()
        if through is not None and (stop or pages % 10 == 0):
            _save_watermark(shard, through)
        if through != entries[-1].slot:
            logger.warning("tick_send_failed", extra={"shard": shard})
        elif stop:
            logger.warning("tick_shard_out_of_time", extra={"shard": shard})
        return not stop

    # Consistent: a tick overlapping one whose lease ran out must see the entries it just wrote.
    for entry in DueModel.query(str(shard), cond, consistent_read=True):
        if entry.slot == mark:
            continue  # between() includes the watermark itself
        page.append(entry)
        if len(page) >= 50:
            if not done(page):
                return
            page = []
    if page and not done(page):
        return
    _save_watermark(shard, upper)  # every entry up to the horizon is dispatched


def _tick_shard(shard: int, holder: str, now: datetime, horizon: datetime) -> TickReport:
    report = TickReport()
    if not _acquire_shard(shard, holder, now):
        report.shards_busy = 1
        return report
    report.shards = 1
    # Stop well before the lease ends: what is left stays due for the next tick, and no other
    # tick can take the shard while we still work it.
    budget = _Budget(SHARD_LEASE_SECONDS - 10)
    try:
        _tick_starts(shard, now, horizon, budget, report)
        if budget.spent():
            logger.warning("tick_shard_out_of_time", extra={"shard": shard})
        else:
            _tick_entries(shard, now, horizon, budget, report)
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
            report.stale += part.stale
            report.errors += part.errors
    logger.info(
        "tick",
        extra={
            "dispatched": report.dispatched,
            "skipped": report.skipped,
            "tasks": report.tasks,
            "stale": report.stale,
            "shards_busy": report.shards_busy,
        },
    )
    return report


def dispatch_if_soon(task: TaskModel, now: datetime) -> int:
    """Dispatch-on-write: a (re)started schedule whose first fire falls before the next tick's
    look-ahead is dispatched now, so it is on time too. Returns the number of messages sent."""
    if task.status != "active" or task.due_at is None:
        return 0
    horizon = now + timedelta(seconds=settings().lookahead_seconds + WRITE_MARGIN_SECONDS)
    if task.due_at > epoch(horizon):
        return 0
    due = _due_of(task)
    try:
        p = plan(due, _schedule(due, now), now, horizon)
    except (schedules.ScheduleError, InvalidSchedule):
        return 0  # the start stays in the index: the tick records why it cannot be computed
    # If this call was slow, a tick may have worked past the entry written here before it
    # existed: then the start stays in the index, and the next tick dispatches it again.
    sent, _, unsent = execute([p], now, {task.task_id: task}, clear_start=False)
    if not unsent and wiring.now_precise().timestamp() - now.timestamp() < WRITE_MARGIN_SECONDS / 2:
        clear_start_of(p, task)
    return sent


def schedule_next(task: TaskModel, fire: datetime | None) -> None:
    """Point an active task at its next fire: into the due index, or — nothing left of a
    finite schedule — `completed`. Event tasks have no fire and stay active. A schedule that
    starts again has no `schedule_error` any more."""
    task.schedule_error = None
    if fire is not None:
        task.due_shard, task.due_at = shard_for(task.task_id), epoch(fire)
        return
    task.due_shard = task.due_at = None
    if task.schedule_kind != "event":
        task.status = "completed"


def pending_fire(task: TaskModel, now: datetime) -> int | None:
    """The task's next execution not yet started: a (re)started schedule's first fire, a
    snoozed fire, else the schedule's next fire after now."""
    if task.status != "active":
        return None
    if task.due_at is not None:
        return int(task.due_at)
    snoozed = _snoozed_epoch(task)
    if snoozed is not None and snoozed > now.timestamp():
        return snoozed
    try:
        nxt = next_fire_from(task, now)
    except InvalidSchedule:  # a stored schedule that no longer computes: the tick pauses the task
        return None
    return epoch(nxt) if nxt is not None else None


def _reach(now: datetime) -> int:
    """The furthest fire a tick or dispatch-on-write may have sent by `now`."""
    return epoch(now) + settings().lookahead_seconds + WRITE_MARGIN_SECONDS


def _fires_between(schedule: schedules.Schedule, lo: int, hi: int) -> list[int]:
    """The schedule's fires in [lo, hi], at most 200."""
    out: list[int] = []
    nxt = next_fire(schedule, from_epoch(lo - 1))
    while nxt is not None and epoch(nxt) <= hi and len(out) < 200:
        out.append(epoch(nxt))
        nxt = next_fire(schedule, nxt)
    return out


def possibly_sent(task: TaskModel, first: int, until: int, now: datetime) -> list[int]:
    """`first` (the pending fire, maybe a snoozed instant) and the fires after it, before
    `until`, that a tick or dispatch-on-write may already have sent."""
    reach = _reach(now)
    if first > reach:
        return []
    later = _fires_between(build_schedule(task.sched or {}, task.task_id, now), first + 1, reach)
    return [first, *(f for f in later if f < until)]


def fence_change(old: TaskModel, new: TaskModel, now: datetime) -> None:
    """After a schedule change: an instant both versions fire at, near now, runs once.

    The old version's run for it may be starting this very second (the change's `now` is
    whole seconds; a `once` task looks back 60 s). Recording that run superseded first stops it;
    if it already started, the new version's run for the instant is recorded superseded instead
    — and a schedule with nothing after it completes."""
    if old.status not in ("active", "completed") or new.status != "active":
        return
    old_version, new_version = int(old.schedule_version or 1), int(new.schedule_version or 1)
    lo, hi = epoch(now) - 61, _reach(now)
    new_schedule = build_schedule(new.sched or {}, new.task_id, now)
    both = set(_fires_between(build_schedule(old.sched or {}, old.task_id, now), lo, hi))
    both &= set(_fires_between(new_schedule, lo, hi))
    max_attempts = int((new.spec or {}).get("max_retries", 3)) + 1
    for fire in sorted(both):
        if runs.fence(new.task_id, new.created_by, fire, old_version, max_attempts, now):
            continue  # the old version's run for it can no longer start
        ran = runs.get(new.task_id, runs.scheduled_run_id(new.task_id, fire, old_version), now)
        if ran is None or ran.status in ("skipped", "queued"):
            continue  # it never started: the new version runs the instant
        runs.fence(new.task_id, new.created_by, fire, new_version, max_attempts, now)
        if next_fire(new_schedule, from_epoch(fire)) is None:
            _update(
                TaskModel(new.task_id),
                [TaskModel.status.set("completed"), TaskModel.due_at.remove(), TaskModel.due_shard.remove()],
                (TaskModel.schedule_version == new_version) & (TaskModel.status == "active"),
            )
            new.status, new.due_at, new.due_shard = "completed", None, None


def next_fire_from(task: TaskModel, now: datetime) -> datetime | None:
    return next_fire(build_schedule(task.sched or {}, task.task_id, now), now)
