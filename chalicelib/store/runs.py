"""Run records as the API, the tick and the worker write them: created once (counted first
when created final), read with retention applied, failed when no attempt will start them.
Below the services and dispatch, so both use it. Identity and the run message are the
domain's (`domain/runs.py`), re-exported here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import attempts
from chalicelib.domain.records import Run, RunStatus
from chalicelib.domain.runs import RunMessage, adhoc_run_id, event_run_id, first_doc, new_doc, scheduled_run_id
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.store import counters, stores

__all__ = [
    "RunMessage",
    "adhoc_run_id",
    "event_run_id",
    "expired",
    "expiry",
    "fail_abandoned",
    "fail_unclaimed",
    "first_doc",
    "fail_unqueued",
    "fence",
    "fence_unstarted",
    "get",
    "new_doc",
    "new_run",
    "put_new",
    "scheduled_run_id",
]


def expiry(now: datetime) -> datetime:
    return now + timedelta(days=settings().run_retention_days)


def new_run(msg: RunMessage, doc: dict[str, Any], now: datetime) -> Run:
    """The record of a run as first stored, from its message and document."""
    return Run(
        task_id=msg.task_id,
        run_id=msg.run_id,
        agent_id=msg.agent_id,
        status=RunStatus(doc["status"]),
        doc=doc,
        expires_at=expiry(now),
    )


def put_new(msg: RunMessage, doc: dict[str, Any], now: datetime) -> bool:
    """Create the run record once; False when it already exists (a repeated fire). A run
    created finished (the tick's record of a schedule it cannot compute) is counted first."""
    counters.count(msg.task_id, msg.run_id, doc["status"], doc["finished_at"] or "")
    return stores().runs.put_if_absent(new_run(msg, doc, now))


def fence(task_id: str, agent_id: str, fire: int, schedule_version: int, max_attempts: int, now: datetime) -> bool:
    """Record a scheduled fire `skipped`/`superseded` before its message is worked, so the
    message finds it finished. False when its record already exists."""
    msg = RunMessage(
        task_id, scheduled_run_id(task_id, fire, schedule_version), agent_id, "schedule", fire, schedule_version
    )
    doc = new_doc(msg, status="skipped", skip_reason="superseded", max_attempts=max_attempts, now=now)
    return put_new(msg, doc, now)


def fence_unstarted(
    task_id: str, agent_id: str, fire: int, schedule_version: int, max_attempts: int, now: datetime
) -> bool:
    """Stop a scheduled fire that has not started: recorded `skipped`/`superseded` if it has no
    record yet (`fence`), and if its record is `queued` (a delivery waiting for a concurrency
    slot) settled so, conditionally: a worker that claims it meanwhile keeps it. True: the fire
    will not run (stopped here, or skipped already). False: it started (or finished)."""
    if fence(task_id, agent_id, fire, schedule_version, max_attempts, now):
        return True
    run_id = scheduled_run_id(task_id, fire, schedule_version)
    for _ in range(3):  # a record that moves between the read and the write is read again
        run = stores().runs.get(task_id, run_id)
        if run is None:
            return fence(task_id, agent_id, fire, schedule_version, max_attempts, now)
        if run.status is RunStatus.SKIPPED:
            return True
        if run.status is not RunStatus.QUEUED:
            return False
        stopped = attempts.ended(run, RunStatus.SKIPPED, now, skip_reason="superseded")
        if stores().runs.settle(run, stopped):
            return True
    return False


def get(task_id: str, run_id: str, now: datetime) -> Run | None:
    """The run's record (consistent), None when absent or past retention."""
    run = stores().runs.get(task_id, run_id)
    return None if run is None or expired(run, now) else run


def expired(run: Run, now: datetime) -> bool:
    """Past retention: DynamoDB's TTL deletes lazily, moto never — readers filter."""
    return run.expires_at is not None and run.expires_at < now


def fail_unclaimed(run: Run, error_type: str, message: str, now: datetime) -> bool:
    """Fail a run no worker holds (no attempt will start it), counted first like every finish.
    False when it changed meanwhile (claimed, finished): then it is not ours to end."""
    final = attempts.failed(run, error_type, message, now)
    counters.count(run.task_id, run.run_id, str(final.status), final.doc["finished_at"])  # before the record is final
    return stores().runs.settle(run, final)


def fail_abandoned(run: Run, error_type: str, message: str, now: datetime) -> bool:
    """Fail a run that no live worker holds and whose message is gone or lost (the dead-letter
    sweep, the stuck-run sweep): counted like any finish, then saved only if the record is still
    as read (`RunStore.settle`), so a worker that claims or finishes it meanwhile keeps it.
    False: it is final, executing under a live lease, or it moved."""
    if attempts.standing(run, now) is not None or not fail_unclaimed(run, error_type, message, now):
        return False
    logger.warning("run_failed", extra={"task_id": run.task_id, "run_id": run.run_id, "error": {"type": error_type}})
    return True


def fail_unqueued(msg: RunMessage, now: datetime, reason: str) -> None:
    """A run whose message SQS did not accept would stay `queued` forever: record it failed."""
    run = stores().runs.get(msg.task_id, msg.run_id)
    if run is None or run.status is not RunStatus.QUEUED:
        return
    fail_unclaimed(run, attempts.ENQUEUE_FAILED, reason, now)
