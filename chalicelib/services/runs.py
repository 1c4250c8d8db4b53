"""Run identity and records.

A scheduled fire's run id is derived from (task id, scheduled instant, schedule version),
so a repeated tick or a redelivered message always names the same run. Ids start with the
instant, so a task's runs sort by time (newest first = descending)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import attempts
from chalicelib.domain.records import Run, RunStatus
from chalicelib.domain.timefmt import iso, iso_epoch
from chalicelib.platform.config import settings
from chalicelib.store import counters, stores


def scheduled_run_id(task_id: str, fire_epoch: int, schedule_version: int) -> str:
    digest = hashlib.sha256(f"{task_id}|{fire_epoch}|{schedule_version}".encode()).hexdigest()[:16]
    return f"{fire_epoch:010d}-s{digest}"


def adhoc_run_id(at_epoch: int, trigger: str) -> str:
    return f"{at_epoch:010d}-{trigger[0]}{secrets.token_hex(8)}"


def event_run_id(at_epoch: int, event_id: str, task_id: str) -> str:
    digest = hashlib.sha256(f"{event_id}|{task_id}".encode()).hexdigest()[:16]
    return f"{at_epoch:010d}-e{digest}"


@dataclass(frozen=True)
class RunMessage:
    """The body of a run message on a run queue."""

    task_id: str
    run_id: str
    agent_id: str
    trigger: str  # schedule | run_now | event
    scheduled_for: int  # epoch seconds
    schedule_version: int | None  # fencing token; None for run_now (not tied to a schedule)
    event_id: str | None = None
    depth: int = 0  # emit chain depth

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> RunMessage:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a run message is a JSON object")
        for name in ("task_id", "run_id", "agent_id", "trigger"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{name} is missing or not a string")
        if not isinstance(data.get("scheduled_for"), int) or data["trigger"] not in ("schedule", "run_now", "event"):
            raise ValueError("scheduled_for or trigger is invalid")
        return cls(
            data["task_id"],
            data["run_id"],
            data["agent_id"],
            data["trigger"],
            data["scheduled_for"],
            data.get("schedule_version"),
            data.get("event_id"),
            int(data.get("depth") or 0),
        )


def new_doc(
    msg: RunMessage,
    *,
    status: str,
    max_attempts: int,
    now: datetime,
    input: Any = None,
    event: Any = None,
    skip_reason: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": msg.run_id,
        "task_id": msg.task_id,
        "trigger": msg.trigger,
        "status": status,
        "skip_reason": skip_reason,
        "attempt": 0,
        "max_attempts": max_attempts,
        "scheduled_for": iso_epoch(msg.scheduled_for),
        "queued_at": iso(now),
        "started_at": None,
        "finished_at": iso(now) if status == "skipped" else None,
        "duration_ms": None,
        "next_attempt_at": None,
        "input": input,
        "event": event,
        "error": None,
        "steps": [],
    }
    return doc


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


def fail_unqueued(msg: RunMessage, now: datetime, reason: str) -> None:
    """A run whose message SQS did not accept would stay `queued` forever: record it failed."""
    run = stores().runs.get(msg.task_id, msg.run_id)
    if run is None or run.status is not RunStatus.QUEUED:
        return
    fail_unclaimed(run, attempts.ENQUEUE_FAILED, reason, now)
