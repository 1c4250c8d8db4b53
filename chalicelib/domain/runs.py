"""Run identity, the run message and a run's first document: pure, so the tick, the services
and the worker share them (`store/runs.py` stores runs).

A scheduled fire's run id is derived from (task id, scheduled instant, schedule version),
so a repeated tick or a redelivered message always names the same run. Ids start with the
instant, so a task's runs sort by time (newest first = descending)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.timefmt import iso, iso_epoch


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
    in_flight: int = 0  # the agent's runs-in-flight ceiling when it has one (dispatch/budgets.py)
    chain: str | None = None  # the id of the event that started the run's event chain (its root)

    def to_json(self) -> str:
        body = dict(self.__dict__)
        if not body["in_flight"]:
            del body["in_flight"]  # the usual case: the message as it was before budgets
        if body["chain"] is None:
            del body["chain"]  # a run no event started
        return json.dumps(body, separators=(",", ":"))

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
        chain = data.get("chain")
        return cls(
            data["task_id"],
            data["run_id"],
            data["agent_id"],
            data["trigger"],
            data["scheduled_for"],
            data.get("schedule_version"),
            data.get("event_id"),
            int(data.get("depth") or 0),
            _count(data.get("in_flight")),
            chain if isinstance(chain, str) else None,
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def first_doc(
    msg: RunMessage, *, admitted: bool, max_attempts: int, now: datetime, input: Any = None, event: Any = None
) -> dict[str, Any]:
    """An on-demand run's first record: `queued` when its agent's run budget admitted it, else
    `skipped` / `budget_exceeded` (recorded, so the run is visible in the task's history)."""
    if admitted:
        return new_doc(msg, status="queued", max_attempts=max_attempts, now=now, input=input, event=event)
    return new_doc(
        msg,
        status="skipped",
        skip_reason="budget_exceeded",
        max_attempts=max_attempts,
        now=now,
        input=input,
        event=event,
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
