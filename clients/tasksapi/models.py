"""Typed models of what the API sends and accepts.

They mirror the component schemas of the served `/openapi.json`; `tests/clients/test_drift.py`
fails when a field exists on one side only. At run time they accept fields they do not know
(`extra="allow"`), so a newer server never breaks an older client: the extra values are kept
and reachable as attributes and in `model_dump()`. Enumerations are plain strings for the same
reason (a new status or skip reason must not make a response unreadable).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base of every response model: tolerant of new fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, timestamps as the API writes them (`2027-03-28T00:00:00Z`)."""
        return self.model_dump(mode="json")


# ---- requests ------------------------------------------------------------------------------
# Every field is optional here: the server is the one authority on what is required and
# allowed, and its 400 names each bad field. These models exist to document and type the
# bodies (and to be checked against the OpenAPI document).


class Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class TaskCreate(Request):
    title: str | None = None
    description: str | None = None
    schedule_kind: str | None = None
    schedule_expr: str | None = None
    timezone: str | None = None
    payload: dict[str, Any] | None = None
    created_by: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    backoff_strategy: str | None = None
    dedupe_key: str | None = None
    dedupe_window_seconds: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    jitter_seconds: int | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    misfire_policy: str | None = None


class TaskUpdate(TaskCreate):
    """PUT body: the fields to change (partial update)."""


class SnoozeRequest(Request):
    delay_seconds: int | None = None
    reason: str | None = None


class RunNowRequest(Request):
    input: dict[str, Any] | None = None


class SchedulePreviewRequest(Request):
    schedule_kind: str | None = None
    schedule_expr: str | None = None
    timezone: str | None = None
    count: int | None = None
    after: str | None = None
    jitter_seconds: int | None = None
    starts_at: str | None = None
    ends_at: str | None = None


class EventCreate(Request):
    name: str | None = None
    data: dict[str, Any] | None = None


class AgentCreate(Request):
    name: str | None = None


class EgressUpdate(Request):
    """Replaces both lists; an omitted one becomes empty."""

    aws_targets: list[str] | None = None
    http_allow: list[str] | None = None


class BudgetUpdate(Request):
    """Replaces the agent's run budget; a field left out (or None) takes the operator's default."""

    runs_per_minute: int | None = None
    runs_burst: int | None = None
    runs_in_flight: int | None = None
    min_interval_seconds: int | None = None


# ---- responses -----------------------------------------------------------------------------


class Task(Model):
    id: str
    title: str
    description: str = ""
    schedule_kind: str = Field(description="cron | rrule | once | event")
    schedule_expr: str | None = None
    timezone: str = "UTC"
    payload: dict[str, Any] = Field(default_factory=dict)
    created_by: str
    priority: int = 5
    max_retries: int = 3
    backoff_strategy: str = "exponential_jitter"
    dedupe_key: str | None = None
    dedupe_window_seconds: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    jitter_seconds: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    misfire_policy: str = "run_once"
    status: str = Field(description="active | paused | canceled | completed")
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_run_status: str | None = None
    run_count: int = 0
    failure_count: int = 0
    snoozed_until: datetime | None = None
    snooze_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int
    schedule_error: str | None = Field(
        None, description="Set when the schedule could not be computed and the task was paused: why, and when."
    )


class TaskList(Model):
    tasks: list[Task]
    limit: int
    offset: int
    next_offset: int | None = None


class StepResult(Model):
    id: str
    type: str
    status: str
    started_at: datetime | None = None
    duration_ms: int | None = None
    output: Any = None
    output_truncated: bool = False
    error: dict[str, Any] | None = None


class Run(Model):
    id: str
    task_id: str
    trigger: str = Field(description="schedule | run_now | event")
    status: str = Field(description="queued | running | retrying | succeeded | failed | skipped")
    skip_reason: str | None = None
    attempt: int = 1
    max_attempts: int = 1
    scheduled_for: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    next_attempt_at: datetime | None = None
    start_lag_ms: int | None = None
    input: Any = None
    event: Any = None
    error: dict[str, Any] | None = None
    steps: list[StepResult] = Field(default_factory=list)


class RunAccepted(Model):
    run: Run


class RunList(Model):
    runs: list[Run]
    next_cursor: str | None = None


class SchedulePreview(Model):
    next_runs: list[datetime]
    description: str


class EventAccepted(Model):
    event_id: str
    runs: list[dict[str, str]] = Field(default_factory=list)


class Agent(Model):
    agent_id: str
    name: str
    status: str = Field(description="active | revoked")
    created_at: datetime


class AgentCreated(Agent):
    token: str
    signing_secret: str


class AgentList(Model):
    agents: list[Agent]


class Egress(Model):
    """What an agent's steps may reach beyond the defaults (docs/pipelines.md, the egress guard)."""

    agent_id: str
    aws_targets: list[str] = Field(default_factory=list)
    http_allow: list[str] = Field(default_factory=list)


class BudgetValues(Model):
    runs_per_minute: int
    runs_burst: int
    runs_in_flight: int
    min_interval_seconds: int


class BudgetSet(Model):
    runs_per_minute: int | None = None
    runs_burst: int | None = None
    runs_in_flight: int | None = None
    min_interval_seconds: int | None = None


class Budget(Model):
    """An agent's run budget (docs/runs.md, per-agent run budgets): what applies (`effective`),
    the admin's values for the agent (`agent`, None: the default) and the operator's `defaults`."""

    agent_id: str
    effective: BudgetValues
    agent: BudgetSet
    defaults: BudgetValues


class FieldError(Model):
    field: str
    message: str


class Problem(Model):
    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    errors: list[FieldError] | None = None


class Health(Model):
    status: str


# The OpenAPI component each model mirrors (the drift test walks this table).
OPENAPI_COMPONENTS: dict[str, type[BaseModel]] = {
    "Task": Task,
    "TaskList": TaskList,
    "StepResult": StepResult,
    "Run": Run,
    "RunAccepted": RunAccepted,
    "RunList": RunList,
    "SchedulePreview": SchedulePreview,
    "EventAccepted": EventAccepted,
    "Agent": Agent,
    "AgentCreated": AgentCreated,
    "AgentList": AgentList,
    "Egress": Egress,
    "Budget": Budget,
    "BudgetValues": BudgetValues,
    "BudgetSet": BudgetSet,
    "Problem": Problem,
    "Health": Health,
    "TaskCreate": TaskCreate,
    "TaskUpdate": TaskUpdate,
    "SnoozeRequest": SnoozeRequest,
    "RunNowRequest": RunNowRequest,
    "SchedulePreviewRequest": SchedulePreviewRequest,
    "EventCreate": EventCreate,
    "AgentCreate": AgentCreate,
    "EgressUpdate": EgressUpdate,
    "BudgetUpdate": BudgetUpdate,
}
