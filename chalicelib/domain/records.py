"""The domain's records: Task, Schedule, Run, Attempt, Agent, and the enums their states take.

Frozen dataclasses: services and the domain pass these, never storage items or loose dicts.
Defaults live in the contract models (`contracts.TaskFields`): a record is built from a
validated definition, so a default is written once. The storage adapters map records to
items and back (`chalicelib/store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Self


class TaskStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELED = "canceled"
    COMPLETED = "completed"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED})


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    RUN_NOW = "run_now"
    EVENT = "event"


class SkipReason(StrEnum):
    TASK_CANCELED = "task_canceled"
    TASK_PAUSED = "task_paused"
    SUPERSEDED = "superseded"  # a fire of a schedule version that was replaced (update, snooze, resume)
    DEDUPLICATED = "deduplicated"  # another run took the dedupe key inside its window
    MISSED = "missed"  # a fire the misfire policy drops
    AGENT_REVOKED = "agent_revoked"  # the task's agent was revoked (tick, or worker before executing)
    BUDGET_EXCEEDED = "budget_exceeded"  # over the agent's runs a minute or runs in flight (dispatch/budgets.py)


class ScheduleKind(StrEnum):
    CRON = "cron"
    RRULE = "rrule"
    ONCE = "once"
    EVENT = "event"


class AgentStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Schedule:
    """When a task runs, as the agent defined it (validated). `anchor` is when the definition
    took effect: the start of interval rules without DTSTART."""

    kind: ScheduleKind
    expr: str | None
    timezone: str = "UTC"
    jitter_seconds: int = 0
    starts_at: str | None = None
    ends_at: str | None = None
    misfire_policy: str = "run_once"
    anchor: str | None = None

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> Self:
        """From the API's schedule fields (`schedule_kind`, `schedule_expr`, …) plus `anchor`."""
        return cls(
            kind=ScheduleKind(d["schedule_kind"]),
            expr=d.get("schedule_expr"),
            timezone=d.get("timezone") or "UTC",
            jitter_seconds=int(d.get("jitter_seconds") or 0),
            starts_at=d.get("starts_at"),
            ends_at=d.get("ends_at"),
            misfire_policy=d.get("misfire_policy") or "run_once",
            anchor=d.get("anchor"),
        )

    def fields(self) -> dict[str, Any]:
        """The API's schedule fields (and `anchor`), as stored."""
        return {
            "schedule_kind": str(self.kind),
            "schedule_expr": self.expr,
            "timezone": self.timezone,
            "jitter_seconds": self.jitter_seconds,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "misfire_policy": self.misfire_policy,
            "anchor": self.anchor,
        }


@dataclass(frozen=True)
class Definition:
    """What a task does and how it is retried: the contract's fields minus the schedule.
    `payload` is the validated pipeline document (`{"steps": [...]}`), kept as JSON because
    the executor walks it step by step."""

    title: str
    description: str
    payload: Mapping[str, Any]
    priority: int
    max_retries: int
    backoff_strategy: str
    dedupe_key: str | None = None
    dedupe_window_seconds: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> Self:
        """From stored or validated fields; a field an old item lacks takes the contract's default."""
        from chalicelib.domain.contracts import TaskFields  # the one place defaults are written

        defaults = TaskFields.model_fields
        return cls(
            title=d.get("title") or "",
            description=d.get("description") or "",
            payload=d.get("payload") or {},
            priority=int(d.get("priority") or defaults["priority"].default),
            max_retries=int(d["max_retries"] if d.get("max_retries") is not None else defaults["max_retries"].default),
            backoff_strategy=d.get("backoff_strategy") or defaults["backoff_strategy"].default,
            dedupe_key=d.get("dedupe_key"),
            dedupe_window_seconds=d.get("dedupe_window_seconds"),
            concurrency_key=d.get("concurrency_key"),
            concurrency_limit=d.get("concurrency_limit"),
        )

    def fields(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "payload": dict(self.payload),
            "priority": self.priority,
            "max_retries": self.max_retries,
            "backoff_strategy": self.backoff_strategy,
            "dedupe_key": self.dedupe_key,
            "dedupe_window_seconds": self.dedupe_window_seconds,
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
        }


@dataclass(frozen=True)
class Task:
    task_id: str
    created_by: str
    created_at: str
    updated_at: str
    status: TaskStatus
    schedule: Schedule
    definition: Definition
    version: int = 1  # bumped by agent-visible changes only; the ETag
    schedule_version: int = 1  # fencing token carried by run messages
    due_shard: str | None = None  # set while a (re)started schedule's first fire is pending
    due_at: int | None = None
    snoozed_until: str | None = None
    snooze_reason: str | None = None
    schedule_error: str | None = None

    @property
    def event_key(self) -> str | None:
        """`<agent>#<pattern>` for an event task with a pattern: what POST /events looks up."""
        if self.schedule.kind is ScheduleKind.EVENT and self.schedule.expr:
            return f"{self.created_by}#{self.schedule.expr}"
        return None

    def evolve(self, **changes: Any) -> Task:
        return replace(self, **changes)


@dataclass(frozen=True)
class Attempt:
    """One execution of a run's pipeline."""

    number: int
    started_at: str
    finished_at: str | None = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Run:
    """One execution of a task (all its attempts). `doc` is the run's representation as the
    API shows it (status, attempt, steps, error…); the typed fields are the ones storage
    conditions on."""

    task_id: str
    run_id: str
    agent_id: str
    status: RunStatus
    doc: Mapping[str, Any] = field(default_factory=dict)
    lease_until: int | None = None  # a worker owns the run until then (epoch seconds)
    expires_at: datetime | None = None
    # Who took the current lease: a worker whose claim landed but whose answer was lost (the SDK
    # resends, the resend fails its condition) recognises its own claim by it.
    claim: str | None = None

    @property
    def attempt(self) -> int:
        return int(self.doc.get("attempt") or 0)

    @property
    def max_attempts(self) -> int:
        return int(self.doc.get("max_attempts") or 1)

    @property
    def trigger(self) -> Trigger:
        return Trigger(self.doc.get("trigger") or "schedule")

    def evolve(self, **changes: Any) -> Run:
        return replace(self, **changes)


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    created_at: str
    status: AgentStatus
    token_hash: str
    signing_secret: str  # encrypted at rest (a KMS envelope); the worker decrypts it
    task_count: int = 0
    egress_aws_targets: tuple[str, ...] | None = None
    egress_http_allow: tuple[str, ...] | None = None
    # The admin's per-agent budget (PUT /agents/{id}/budget); None: the operator's default.
    runs_per_minute: int | None = None
    runs_burst: int | None = None
    runs_in_flight: int | None = None
    min_interval_seconds: int | None = None


@dataclass(frozen=True)
class Event:
    """An event an agent published (POST /events, an `emit` step, an AWS event) and the runs it
    started (`{"task_id", "run_id"}` each)."""

    agent_id: str
    event_id: str
    name: str
    data: Any
    time: str
    runs: tuple[Mapping[str, str], ...] = ()
    depth: int = 0
    expires_at: datetime | None = None
