"""Carrying out plans: send their messages, then settle each task's schedule (its next entry
in the `due` table, its start out of the due index, completion), record missed fires, and
pause a task whose schedule cannot be computed.

Crash safety: a fire's next entry is written only after its messages were sent, and the
watermark (or the index attributes) moves only after that, so a crash at any point leaves
the fire to the next tick. A crash after sending re-sends the same run ids next tick; the
worker's conditional claim of the run record makes those copies no-ops.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

from chalicelib.dispatch.plan import Plan, message, shard_for
from chalicelib.dispatch.queue import BATCH, send_all
from chalicelib.domain import schedules
from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.records import RunStatus, SkipReason
from chalicelib.domain.runs import new_doc
from chalicelib.domain.timefmt import iso
from chalicelib.platform.log import failure, logger
from chalicelib.store import counters, runs, stores
from chalicelib.store.ports import DueEntry, DueFire


@dataclass(frozen=True)
class Executed:
    sent: int  # messages the queues accepted (and whose schedules were settled)
    skipped: int  # missed fires recorded `skipped`
    unsent: frozenset[str]  # tasks whose messages were not all accepted: left to the next tick


def settle(p: Plan, *, clear_start: bool = True) -> bool:
    """After a plan's messages were sent: write the schedule's next entry; then a started
    schedule leaves the task's index (unless `clear_start` is False), and a schedule with
    nothing left to send completes. False: the task changed meanwhile (its new schedule
    version fences what was sent)."""
    if p.next_due is not None:
        # False: a newer version of the schedule holds the slot, and dispatches that fire.
        stores().due.add(DueEntry(shard_for(p.task_id), p.task_id, p.next_due, p.schedule_version))
    if p.start:
        return clear_start_of(p) if clear_start else True
    if p.exhausted:
        return stores().due_tasks.complete(p.task_id, p.schedule_version)
    return True


def clear_start_of(p: Plan) -> bool:
    """Take a dispatched start out of the task's index, only if nothing changed since we read it."""
    return stores().due_tasks.advance_due(p.task_id, p.expect_due, p.schedule_version, complete=p.exhausted)


def record_missed(p: Plan, now: datetime, max_attempts: int = 1) -> None:
    if p.missed_truncated:  # said out loud: nothing is dropped silently
        logger.warning("missed_fires_truncated", extra={"task_id": p.task_id, "recorded": len(p.missed)})
    for msg in p.missed:
        doc = new_doc(
            msg, status=RunStatus.SKIPPED.value, skip_reason=SkipReason.MISSED.value, max_attempts=max_attempts, now=now
        )
        runs.put_new(msg, doc, now)


def record_revoked(p: Plan, now: datetime) -> Plan:
    """A revoked agent's fires: recorded `skipped` / `agent_revoked` (each fire's own run id, so a
    repeated tick writes it once) instead of sent; the plan left settles the schedule as usual."""
    return record_skipped(p, {s.message.run_id for s in p.sends}, SkipReason.AGENT_REVOKED, now)


def record_skipped(p: Plan, run_ids: set[str], reason: SkipReason, now: datetime) -> Plan:
    """The plan's fires among `run_ids` recorded `skipped` / `reason` instead of sent (like
    `record_revoked`); the plan keeps the others."""
    for send in p.sends:
        if send.message.run_id in run_ids:
            doc = new_doc(
                send.message, status=RunStatus.SKIPPED.value, skip_reason=reason.value, max_attempts=1, now=now
            )
            runs.put_new(send.message, doc, now)
    return replace(p, sends=tuple(s for s in p.sends if s.message.run_id not in run_ids))


def execute(plans: list[Plan], now: datetime, *, clear_start: bool = True) -> Executed:
    """Do the I/O for a set of plans: record missed fires, then per band and ≤ 10 messages at
    a time send and settle, so a crash re-sends at most one batch."""
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
            if chunks[-1] and sum(len(c.sends) for c in chunks[-1]) + len(p.sends) > BATCH:
                chunks.append([])
            chunks[-1].append(p)
        for chunk in chunks:
            ok = send_all([s for c in chunk for s in c.sends]) if band else set()
            for c in chunk:
                if all(s.message.run_id in ok for s in c.sends):
                    settle(c, clear_start=clear_start)
                    sent += len(c.sends)
                else:
                    unsent.add(c.task_id)
    return Executed(sent, sum(len(p.missed) for p in plans), frozenset(unsent))


def schedule_failed(due: DueFire, error: Exception, now: datetime) -> str:
    """A stored schedule that cannot be computed (it no longer parses, or a fire takes more
    than the engine's work budget) is never dropped silently: its pending fire gets a `failed`
    run record whose error says why, and the task is paused with a `schedule_error`, so its
    agent sees both (docs/schedules.md). Planning is pure, so any error here would repeat on
    every tick. Returns the reason."""
    reason = error.message if isinstance(error, schedules.ScheduleError) else str(error)
    if isinstance(error, InvalidInput) and error.errors:
        reason = "; ".join(f"{e.field}: {e.message}" for e in error.errors)
    reason = reason or type(error).__name__
    logger.warning("schedule_failed", extra={"task_id": due.task_id, "reason": reason[:500]})
    try:
        msg = message(due, due.due_at)
        doc = new_doc(msg, status=RunStatus.FAILED.value, max_attempts=1, now=now)
        doc.update(finished_at=iso(now), error={"type": "schedule_error", "message": reason[:1000], "step": None})
        # before the final record (counters.py)
        counters.count(msg.task_id, msg.run_id, RunStatus.FAILED.value, doc["finished_at"])
        runs.put_new(msg, doc, now)  # the fire's own run id: a repeated tick writes it once
        stores().due_tasks.pause_with_error(due.task_id, due.schedule_version, f"{iso(now)}: {reason[:1000]}")
    except Exception as exc:  # noqa: BLE001 - the shard goes on; the next tick retries this task
        logger.error("schedule_failed_not_recorded", extra={"task_id": due.task_id, **failure(exc)})
    return reason
