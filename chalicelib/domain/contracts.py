"""Request and response models. The same classes validate requests and generate the
OpenAPI document, so the two cannot drift."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from chalicelib.domain.allowlist import parse_entry
from chalicelib.domain.budgets import (
    ENGINE_MIN_INTERVAL_SECONDS,
    MAX_MIN_INTERVAL_SECONDS,
    MAX_RUNS_IN_FLIGHT,
    MAX_RUNS_PER_MINUTE,
)

Str = StrictStr
Int = StrictInt


def _is_int(tp: Any) -> bool:
    return tp is int or any(_is_int(arg) for arg in get_args(tp))


def _integral(value: Any) -> Any:
    # JSON has one number type: 7192.0 is the integer 7192 (JSON Schema's "integer" says so),
    # while 7192.5, "7192" and true stay refused by the strict check that follows.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) if isinstance(v, float) else v for v in value]
    return value


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        """Integer fields take a float with no fraction; fields of any type keep what was sent."""
        if not isinstance(data, dict):
            return data
        ints = {name for name, f in cls.model_fields.items() if _is_int(f.annotation)}
        return {k: _integral(v) if k in ints else v for k, v in data.items()}


class _StepBase(_In):
    id: Annotated[Str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    timeout_seconds: Annotated[Int, Field(ge=1, le=60)] = 30
    continue_on_error: StrictBool = False


class HttpStep(_StepBase):
    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    # http(s), any case, or a template that renders to one (checked again after rendering).
    url: Annotated[Str, Field(min_length=1, max_length=2048, pattern=r"^([hH][tT][tT][pP][sS]?://|[\s\S]*\{\{)")]
    headers: dict[Str, Str] = Field(default_factory=dict)
    query: dict[Str, Str | Int] = Field(default_factory=dict)
    body: Any = None
    expect_status: list[Annotated[Int, Field(ge=100, le=599)]] | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if "{{" not in v and not v.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class LambdaStep(_StepBase):
    type: Literal["lambda"]
    function_name: Annotated[Str, Field(min_length=1, max_length=256)]
    payload: Any = None
    invocation_type: Literal["RequestResponse", "Event"] = "RequestResponse"


class SqsStep(_StepBase):
    type: Literal["sqs"]
    queue_url: Annotated[Str, Field(min_length=1, max_length=2048)]
    message_body: Any
    message_attributes: dict[Str, Str] = Field(default_factory=dict)


class SnsStep(_StepBase):
    type: Literal["sns"]
    topic_arn: Annotated[Str, Field(min_length=1, max_length=1024)]
    message: Any
    subject: Annotated[Str, Field(max_length=100)] | None = None


class EventBridgeStep(_StepBase):
    type: Literal["eventbridge"]
    event_bus_name: Annotated[Str, Field(min_length=1, max_length=1600)] = "default"
    source: Annotated[Str, Field(min_length=1, max_length=256)]
    detail_type: Annotated[Str, Field(min_length=1, max_length=128)]
    detail: Any = Field(default_factory=dict)


class EmitStep(_StepBase):
    type: Literal["emit"]
    name: Annotated[Str, Field(min_length=1, max_length=256)]
    data: Any = Field(default_factory=dict)


class LogStep(_StepBase):
    type: Literal["log"]
    message: Any


Step = Annotated[
    HttpStep | LambdaStep | SqsStep | SnsStep | EventBridgeStep | EmitStep | LogStep,
    Field(discriminator="type"),
]


class Pipeline(_In):
    steps: Annotated[list[Step], Field(min_length=1, max_length=20)]

    @field_validator("steps")
    @classmethod
    def _unique_ids(cls, steps: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for s in steps:
            if s.id in seen:
                raise ValueError(f"step id {s.id!r} is used twice")
            seen.add(s.id)
        return steps


ScheduleKind = Literal["cron", "rrule", "once", "event"]
Backoff = Literal["exponential_jitter", "linear", "fixed"]
Misfire = Literal["run_once", "skip", "run_all"]
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: str) -> str:
    # The shape here (so the document's `format: date-time` is the rule); the calendar, the
    # range (years 0001–9999) and the meaning where the value is used.
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 timestamp (e.g. 2027-03-28T00:00:00Z)")
    return value


Timestamp = Annotated[
    Str,
    Field(description="RFC 3339 timestamp, e.g. 2027-03-28T00:00:00Z", json_schema_extra={"format": "date-time"}),
    AfterValidator(_rfc3339),
]
# What `schedule_expr` may be for kind `event`: a name, a name ending in .*, or *.
EVENT_PATTERN = r"^(\*|[A-Za-z0-9._:-]+(\.\*)?)$"
Uuid = Annotated[Str, Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]


# `schedule_expr` is required unless the kind is `event` (whose pattern is optional).
_EXPR_UNLESS_EVENT: dict[str, Any] = {
    "if": {"properties": {"schedule_kind": {"const": "event"}}, "required": ["schedule_kind"]},
    "then": {
        "properties": {
            "schedule_expr": {
                "anyOf": [{"type": "string", "maxLength": 256, "pattern": EVENT_PATTERN}, {"type": "null"}]
            }
        }
    },
    "else": {"required": ["schedule_expr"], "properties": {"schedule_expr": {"type": "string"}}},
}


# A window needs its key, a limit its key (a null one needs nothing).
def _needs(field: str, key: str) -> dict[str, Any]:
    return {
        "if": {"properties": {field: {"type": "integer"}}, "required": [field]},
        "then": {"properties": {key: {"type": "string"}}, "required": [key]},
    }


_TASK_RULES: dict[str, Any] = {
    "allOf": [
        _EXPR_UNLESS_EVENT,
        _needs("dedupe_window_seconds", "dedupe_key"),
        _needs("concurrency_limit", "concurrency_key"),
    ]
}
_TASK_EXAMPLE: dict[str, Any] = {
    "title": "Nightly report",
    "description": "POST the report request",
    "schedule_kind": "cron",
    "schedule_expr": "30 2 * * *",
    "timezone": "Europe/Chisinau",
    "created_by": "9b0c8e8a-3f4e-4a51-9d55-2f5a8f1f0c11",
    "payload": {"steps": [{"id": "note", "type": "log", "message": "report for {{ run.scheduled_for }}"}]},
}


class TaskFields(_In):
    """Everything an agent may set on a task; `TaskCreate` adds what is required."""

    model_config = ConfigDict(json_schema_extra=_TASK_RULES)

    title: Annotated[Str, Field(min_length=1, max_length=200)]
    description: Annotated[Str, Field(max_length=4000)]
    schedule_kind: ScheduleKind
    schedule_expr: Annotated[Str, Field(min_length=1, max_length=4000)] | None = None
    timezone: Annotated[Str, Field(min_length=1, max_length=64)] = "UTC"
    payload: Pipeline
    created_by: Uuid
    priority: Annotated[Int, Field(ge=1, le=9)] = 5
    max_retries: Annotated[Int, Field(ge=0, le=25)] = 3
    backoff_strategy: Backoff = "exponential_jitter"
    dedupe_key: Annotated[Str, Field(min_length=1, max_length=256)] | None = None
    dedupe_window_seconds: Annotated[Int, Field(ge=1, le=2_592_000)] | None = None
    concurrency_key: Annotated[Str, Field(min_length=1, max_length=256)] | None = None
    concurrency_limit: Annotated[Int, Field(ge=1, le=100)] | None = None
    jitter_seconds: Annotated[Int, Field(ge=0, le=3600)] = 0
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None
    misfire_policy: Misfire = "run_once"


class TaskCreate(TaskFields):
    model_config = ConfigDict(json_schema_extra={**_TASK_RULES, "examples": [_TASK_EXAMPLE]})


class TaskUpdate(_In):
    """PUT body: any subset of the task fields; merged, then validated as a TaskCreate."""

    title: Any = None
    description: Any = None
    schedule_kind: Any = None
    schedule_expr: Any = None
    timezone: Any = None
    payload: Any = None
    created_by: Any = None
    priority: Any = None
    max_retries: Any = None
    backoff_strategy: Any = None
    dedupe_key: Any = None
    dedupe_window_seconds: Any = None
    concurrency_key: Any = None
    concurrency_limit: Any = None
    jitter_seconds: Any = None
    starts_at: Any = None
    ends_at: Any = None
    misfire_policy: Any = None


SCHEDULE_FIELDS = (
    "schedule_kind",
    "schedule_expr",
    "timezone",
    "jitter_seconds",
    "starts_at",
    "ends_at",
    "misfire_policy",
)


class Task(TaskFields):
    """The task representation returned by every route that returns a task."""

    model_config = ConfigDict(extra="forbid")
    id: Uuid
    status: Literal["active", "paused", "canceled", "completed"]
    next_run_at: Timestamp | None
    last_run_at: Timestamp | None
    last_run_status: Str | None
    run_count: Int
    failure_count: Int
    snoozed_until: Timestamp | None
    snooze_reason: Str | None
    schedule_error: Annotated[
        Str | None,
        Field(description="extension: '<when>: <why>' when the scheduler could not compute the schedule and paused it"),
    ]
    created_at: Timestamp
    updated_at: Timestamp
    version: Int


class TaskList(BaseModel):
    tasks: list[Task]
    limit: Int
    offset: Int
    next_offset: Int | None


class AgentCreate(_In):
    name: Annotated[Str, Field(min_length=1, max_length=200)]


class Agent(BaseModel):
    agent_id: Uuid
    name: Str
    status: Literal["active", "revoked"]
    created_at: Timestamp


class AgentCreated(Agent):
    token: Str
    signing_secret: Str


class AgentList(BaseModel):
    agents: list[Agent]


def _allow_entry(value: str) -> str:
    parse_entry(value)  # ValueError → a 400 naming the entry
    return value.strip()


AwsTarget = Annotated[Str, Field(min_length=1, max_length=2048, pattern=r"^[!-~]+$")]
HttpAllowEntry = Annotated[Str, Field(min_length=1, max_length=300), AfterValidator(_allow_entry)]


class EgressUpdate(_In):
    """Replaces both lists; an omitted one becomes empty."""

    aws_targets: list[AwsTarget] = Field(default_factory=list, max_length=100)
    http_allow: list[HttpAllowEntry] = Field(default_factory=list, max_length=100)


class Egress(BaseModel):
    agent_id: Uuid
    aws_targets: list[Str]
    http_allow: list[Str]


class BudgetUpdate(_In):
    """Replaces the agent's budget: each field null or omitted takes the operator's default."""

    runs_per_minute: Annotated[Int, Field(ge=0, le=MAX_RUNS_PER_MINUTE, description="0: no limit")] | None = None
    runs_burst: Annotated[Int, Field(ge=1, le=MAX_RUNS_PER_MINUTE)] | None = None
    runs_in_flight: Annotated[Int, Field(ge=0, le=MAX_RUNS_IN_FLIGHT, description="0: not counted")] | None = None
    min_interval_seconds: Annotated[Int, Field(ge=ENGINE_MIN_INTERVAL_SECONDS, le=MAX_MIN_INTERVAL_SECONDS)] | None = (
        None
    )


class BudgetValues(BaseModel):
    runs_per_minute: Int
    runs_burst: Int
    runs_in_flight: Int
    min_interval_seconds: Int


class BudgetSet(BaseModel):
    runs_per_minute: Int | None
    runs_burst: Int | None
    runs_in_flight: Int | None
    min_interval_seconds: Int | None


class Budget(BaseModel):
    agent_id: Uuid
    effective: BudgetValues = Field(description="what applies: the agent's own value of each, else the default")
    agent: BudgetSet = Field(description="the admin's values for this agent (null: the default)")
    defaults: BudgetValues = Field(description="the operator's defaults (TASKAPI_AGENT_RUNS_PER_MINUTE, …)")


class SnoozeRequest(_In):
    delay_seconds: Annotated[Int, Field(ge=1, le=604_800)]
    reason: Annotated[Str, Field(max_length=500)] | None = None


class RunNowRequest(_In):
    input: dict[Str, Any] | None = None


class SchedulePreviewRequest(_In):
    model_config = ConfigDict(json_schema_extra=_EXPR_UNLESS_EVENT)

    schedule_kind: ScheduleKind
    schedule_expr: Annotated[Str, Field(min_length=1, max_length=4000)] | None = None
    timezone: Annotated[Str, Field(min_length=1, max_length=64)] = "UTC"
    count: Annotated[Int, Field(ge=1, le=100)] = 10
    after: Timestamp | None = None
    jitter_seconds: Annotated[Int, Field(ge=0, le=3600)] = 0
    starts_at: Timestamp | None = None
    ends_at: Timestamp | None = None


class SchedulePreview(BaseModel):
    next_runs: list[Timestamp]
    description: Str


class StepResult(BaseModel):
    id: Str
    type: Str
    status: Str
    started_at: Timestamp | None = None
    duration_ms: Int | None = None
    output: Any = None
    output_truncated: bool = False
    error: dict[str, Any] | None = None


class Run(BaseModel):
    id: Str
    task_id: Uuid
    trigger: Literal["schedule", "run_now", "event"]
    status: Literal["queued", "running", "retrying", "succeeded", "failed", "skipped"]
    skip_reason: (
        Literal[
            "deduplicated", "superseded", "task_paused", "task_canceled", "missed", "agent_revoked", "budget_exceeded"
        ]
        | None
    )
    attempt: Int
    max_attempts: Int
    scheduled_for: Timestamp | None
    queued_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration_ms: Int | None
    next_attempt_at: Timestamp | None
    start_lag_ms: Int | None = Field(None, description="extension: first attempt's start minus scheduled_for")
    input: Any
    event: Any
    error: dict[str, Any] | None
    steps: list[StepResult]


class RunAccepted(BaseModel):
    run: Run


class RunList(BaseModel):
    runs: list[Run]
    next_cursor: Str | None


class EventCreate(_In):
    name: Annotated[Str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._:-]+$")]
    data: dict[Str, Any] = Field(default_factory=dict)


class EventAccepted(BaseModel):
    event_id: Str
    runs: list[dict[str, Str]]


class Problem(BaseModel):
    type: Str
    title: Str
    status: Int
    detail: Str
    errors: list[dict[str, Str]] | None = None


class Health(BaseModel):
    status: Literal["ok"]


def parse_timestamp(value: str, field: str) -> datetime:
    """RFC 3339 with an explicit offset; naive timestamps are ambiguous, so rejected."""
    from chalicelib.domain.errors import InvalidInput

    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput.field(field, f"{value!r} is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None:
        raise InvalidInput.field(field, "must include a UTC offset or Z")
    return dt
