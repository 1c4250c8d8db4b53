"""`tasks-mcp`: the Tasks API as MCP tools, for agents (official MCP Python SDK, `MCPServer`).

Configured by `TASKS_API_URL` and `TASKS_API_TOKEN` (the agent's token; `created_by` defaults to
that agent). Transports: stdio (the default, what Claude Desktop, Claude Code and Cursor start)
and streamable HTTP (`--transport streamable-http --port 8765`, bound to 127.0.0.1 unless
`--host` says otherwise: every caller of that endpoint acts with the one configured token).

Every failure a caller can cause comes back as a tool error (`is_error`) whose text names the
field and what is allowed; nothing a caller sends crashes the server.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from tasksapi import dst, models
from tasksapi._http import VERSION
from tasksapi.client import AsyncClient
from tasksapi.config import resolve
from tasksapi.errors import ApiError, ConfigError, Error, NotFound, PreconditionFailed, RateLimited

T = TypeVar("T")

SCHEDULES = """\
Schedules (schedule_kind + schedule_expr, read in `timezone`, an IANA name, default UTC):
- cron: 5 fields "minute hour day-of-month month day-of-week", e.g. "30 2 * * *" (02:30 daily),
  "0 9 * * MON-FRI", "*/15 * * * *", or @hourly/@daily/@weekly/@monthly/@yearly.
- rrule: RFC 5545, e.g. "FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0" or
  "DTSTART:20270101T090000\\nRRULE:FREQ=DAILY;COUNT=5". Nothing more often than once a minute.
- once: a timestamp, e.g. "2027-01-15T09:00:00" (local to timezone) or "2027-01-15T07:00:00Z";
  not more than 60 s in the past.
- event: no timer; runs on send_event for a matching name pattern ("order.created", "order.*", "*")
  or on run_task_now.
DST rule: a local time that does not exist (spring-forward gap) fires once at the first instant
after the gap (02:30 → 03:00); a repeated local time (fall-back) fires once, at its first
occurrence; schedules with hour "*" follow real elapsed time. Check with preview_schedule first."""

PIPELINE = """\
payload is the pipeline: {"steps": [step, ...]}, 1–20 steps run in order, each with a unique "id"
and a "type": http (method, url, headers, query, body, expect_status), lambda (function_name,
payload), sqs (queue_url, message_body), sns (topic_arn, message), eventbridge (source,
detail_type, detail), emit (name, data: publishes an event), log (message). Optional per step:
timeout_seconds (1–60, default 30), continue_on_error. Strings may hold {{ jmespath }} templates
over {task, run, input, event, steps.<id>.output}, e.g. "{{ run.scheduled_for }}".
Example: {"steps": [{"id": "call", "type": "http", "method": "POST", "url": "https://example.com/hook",
"body": {"run": "{{ run.id }}"}}]}"""

LIMITS = """\
Limits: title 1–200 chars, description ≤ 4000, priority 1–9 (1 highest), max_retries 0–25,
payload ≤ 64 KiB, 10,000 tasks per agent, per-agent request rate limits (a rate-limited call
says how long to wait)."""

INSTRUCTIONS = f"""\
Schedule work and inspect it with the Tasks API: a task is a schedule plus a pipeline of steps;
each execution is a run with a full record. Typical flow: preview_schedule → create_task →
get_task / list_runs → snooze_task, pause_task, resume_task or cancel_task.

{SCHEDULES}

{LIMITS}"""

TaskIdArg = Annotated[str, Field(description="The task's id (a UUID returned by create_task or list_tasks).")]
Kind = Literal["cron", "rrule", "once", "event"]
Status = Literal["active", "paused", "canceled", "completed"]


class Pipeline(BaseModel):
    """The steps a run executes."""

    model_config = ConfigDict(extra="allow")
    steps: Annotated[
        list[dict[str, Any]],
        Field(
            min_length=1,
            max_length=20,
            description='Steps in order; each {"id": "...", "type": "http|lambda|sqs|sns|eventbridge|emit|log", ...}.',
        ),
    ]


class FirePreview(BaseModel):
    utc: str = Field(description="The fire instant, RFC 3339 UTC.")
    local: str = Field(description="The same instant in the schedule's time zone, with its offset.")
    dst: str | None = Field(None, description="Set when a daylight-saving change moved or doubled this fire.")


class SchedulePreviewResult(BaseModel):
    description: str = Field(description="The schedule in words.")
    timezone: str
    next_runs: list[FirePreview]


class TaskPage(BaseModel):
    tasks: list[models.Task]
    next_offset: int | None = Field(description="Pass as offset to get the next page; null on the last page.")


class RunPage(BaseModel):
    runs: list[models.Run]
    next_cursor: str | None = Field(description="Pass as cursor to get older runs; null when there are no more.")


def _tool_error(e: Error) -> ToolError:
    """A message a model can act on: what failed, which fields, and what to do next."""
    if isinstance(e, ApiError):
        text = e.message()  # status, detail and every field error
        if isinstance(e, NotFound):
            text += ". Check the id with list_tasks (another agent's task is not visible)."
        elif isinstance(e, PreconditionFailed):
            text += ". The task changed since you read it: get_task again, then retry with its version."
        elif isinstance(e, RateLimited) and e.retry_after is not None:
            text += f". Retry after {e.retry_after:.0f} s."
        return ToolError(text)
    return ToolError(str(e))


class Tools:
    """The tool functions, bound to one lazily made AsyncClient (so the server starts, and lists
    its tools, even before it is configured; a missing setting is a tool error naming it)."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self._url, self._token = url, token
        self._client: AsyncClient | None = None

    def client(self) -> AsyncClient:
        if self._client is None:
            settings = resolve(self._url, self._token, use_file=False)
            self._client = AsyncClient(settings.url, settings.token)
        return self._client

    async def call(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        try:
            client = self.client()
        except ConfigError as e:
            raise ToolError(f"tasks-mcp is not configured: {e}") from None
        try:
            return await fn(client)
        except Error as e:
            raise _tool_error(e) from None
        except ValueError as e:  # e.g. an empty id, a naive datetime
            raise ToolError(str(e)) from None

    async def read(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """`call` for a resource: a failure is a ResourceError (a ToolError there reads as a crash)."""
        try:
            return await self.call(fn)
        except ToolError as e:
            raise ResourceError(str(e)) from None


def build_server(url: str | None = None, token: str | None = None) -> MCPServer:
    tools = Tools(url, token)
    server = MCPServer("tasks", instructions=INSTRUCTIONS, version=VERSION)
    read_only = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )

    @server.tool(
        description=f"""Create a scheduled task: a schedule plus a pipeline of steps, run on time, retried
with backoff, every run recorded. Returns the task (its id, status, next_run_at).

{SCHEDULES}

{PIPELINE}

{LIMITS}""",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    )
    async def create_task(
        title: Annotated[str, Field(min_length=1, max_length=200, description="Short name, 1–200 chars.")],
        schedule_kind: Annotated[Kind, Field(description="cron, rrule, once or event.")],
        payload: Annotated[Pipeline, Field(description="The pipeline: {'steps': [...]} (1–20 steps).")],
        schedule_expr: Annotated[
            str | None,
            Field(description='The expression for the kind, e.g. "30 2 * * *"; omit only for event tasks.'),
        ] = None,
        description: Annotated[str, Field(max_length=4000, description="What the task is for (≤ 4000 chars).")] = "",
        timezone: Annotated[
            str | None, Field(description='IANA time zone the schedule is read in, e.g. "Europe/Berlin"; default UTC.')
        ] = None,
        created_by: Annotated[
            str | None, Field(description="Agent id; defaults to the calling agent (must be the caller).")
        ] = None,
        priority: Annotated[int | None, Field(ge=1, le=9, description="1 (highest) to 9; default 5.")] = None,
        max_retries: Annotated[
            int | None, Field(ge=0, le=25, description="Retries after a failed attempt, 0–25; default 3.")
        ] = None,
        backoff_strategy: Annotated[
            Literal["exponential_jitter", "linear", "fixed"] | None,
            Field(description="Delay between retries (base 10 s, cap 1 h); default exponential_jitter."),
        ] = None,
        dedupe_key: Annotated[
            str | None, Field(max_length=256, description="At most one run per key executes within the window.")
        ] = None,
        dedupe_window_seconds: Annotated[
            int | None, Field(ge=1, le=2_592_000, description="Window for dedupe_key, 1 s–30 days; default 3600.")
        ] = None,
        concurrency_key: Annotated[
            str | None, Field(max_length=256, description="Runs sharing this key are limited in parallel.")
        ] = None,
        concurrency_limit: Annotated[
            int | None, Field(ge=1, le=100, description="Parallel runs per concurrency_key, 1–100; default 1.")
        ] = None,
        jitter_seconds: Annotated[
            int | None, Field(ge=0, le=3600, description="A stable per-task offset in [0, jitter) added to each fire.")
        ] = None,
        starts_at: Annotated[str | None, Field(description="RFC 3339: no fire before this instant.")] = None,
        ends_at: Annotated[str | None, Field(description="RFC 3339: no fire after this instant.")] = None,
        misfire_policy: Annotated[
            Literal["run_once", "skip", "run_all"] | None,
            Field(description="Fires missed during an outage: run the latest once (default), skip, or run all."),
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Field(max_length=200, description="Same key within 24 h returns the first task instead of a duplicate."),
        ] = None,
    ) -> models.Task:
        fields: dict[str, Any] = {
            "title": title,
            "description": description,
            "schedule_kind": schedule_kind,
            "payload": payload.model_dump(mode="json"),
        }
        optional = {
            "schedule_expr": schedule_expr,
            "timezone": timezone,
            "created_by": created_by,
            "priority": priority,
            "max_retries": max_retries,
            "backoff_strategy": backoff_strategy,
            "dedupe_key": dedupe_key,
            "dedupe_window_seconds": dedupe_window_seconds,
            "concurrency_key": concurrency_key,
            "concurrency_limit": concurrency_limit,
            "jitter_seconds": jitter_seconds,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "misfire_policy": misfire_policy,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return await tools.call(lambda c: c.tasks.create(idempotency_key=idempotency_key, **fields))

    @server.tool(
        description="List your tasks, newest first, one page at a time (follow next_offset).",
        annotations=read_only,
    )
    async def list_tasks(
        status: Annotated[Status | None, Field(description="Only tasks in this status.")] = None,
        schedule_kind: Annotated[Kind | None, Field(description="Only tasks of this kind.")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Page size, 1–200.")] = 20,
        offset: Annotated[int, Field(ge=0, description="next_offset of the previous page; 0 for the first.")] = 0,
    ) -> TaskPage:
        page = await tools.call(
            lambda c: c.tasks.page(status=status, schedule_kind=schedule_kind, limit=limit, offset=offset)
        )
        return TaskPage(tasks=page.tasks, next_offset=page.next_offset)

    @server.tool(
        description="Get one task: its schedule, status, next_run_at, last run, counters and version.",
        annotations=read_only,
    )
    async def get_task(task_id: TaskIdArg) -> models.Task:
        return await tools.call(lambda c: c.tasks.get(task_id))

    @server.tool(
        description=f"""Change some fields of a task (partial update: only the fields given change; the
result is validated like a create). Changing the schedule recomputes next_run_at. A canceled task
cannot change. Pass if_match=<version you read> to refuse the change if the task changed since.

{SCHEDULES}

{PIPELINE}""",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True, open_world_hint=True),
    )
    async def update_task(
        task_id: TaskIdArg,
        if_match: Annotated[int | None, Field(ge=1, description="The task's version as you read it.")] = None,
        title: Annotated[str | None, Field(min_length=1, max_length=200, description="New title.")] = None,
        description: Annotated[str | None, Field(max_length=4000, description="New description.")] = None,
        schedule_kind: Annotated[Kind | None, Field(description="New kind (give schedule_expr with it).")] = None,
        schedule_expr: Annotated[str | None, Field(description="New expression.")] = None,
        timezone: Annotated[str | None, Field(description="New IANA time zone.")] = None,
        payload: Annotated[Pipeline | None, Field(description="New pipeline (replaces the whole pipeline).")] = None,
        priority: Annotated[int | None, Field(ge=1, le=9, description="1 (highest) to 9.")] = None,
        max_retries: Annotated[int | None, Field(ge=0, le=25, description="0–25.")] = None,
        backoff_strategy: Annotated[
            Literal["exponential_jitter", "linear", "fixed"] | None, Field(description="Retry delay strategy.")
        ] = None,
        dedupe_key: Annotated[str | None, Field(max_length=256, description="Dedupe key.")] = None,
        dedupe_window_seconds: Annotated[int | None, Field(ge=1, le=2_592_000, description="1 s–30 days.")] = None,
        concurrency_key: Annotated[str | None, Field(max_length=256, description="Concurrency key.")] = None,
        concurrency_limit: Annotated[int | None, Field(ge=1, le=100, description="1–100.")] = None,
        jitter_seconds: Annotated[int | None, Field(ge=0, le=3600, description="0–3600.")] = None,
        starts_at: Annotated[str | None, Field(description="RFC 3339: no fire before.")] = None,
        ends_at: Annotated[str | None, Field(description="RFC 3339: no fire after.")] = None,
        misfire_policy: Annotated[
            Literal["run_once", "skip", "run_all"] | None, Field(description="Missed-fire policy.")
        ] = None,
    ) -> models.Task:
        given = {
            "title": title,
            "description": description,
            "schedule_kind": schedule_kind,
            "schedule_expr": schedule_expr,
            "timezone": timezone,
            "payload": payload.model_dump(mode="json") if payload is not None else None,
            "priority": priority,
            "max_retries": max_retries,
            "backoff_strategy": backoff_strategy,
            "dedupe_key": dedupe_key,
            "dedupe_window_seconds": dedupe_window_seconds,
            "concurrency_key": concurrency_key,
            "concurrency_limit": concurrency_limit,
            "jitter_seconds": jitter_seconds,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "misfire_policy": misfire_policy,
        }
        fields = {k: v for k, v in given.items() if v is not None}
        if not fields:
            raise ToolError("nothing to change: give at least one field besides task_id (e.g. priority)")
        return await tools.call(lambda c: c.tasks.update(task_id, if_match=if_match, **fields))

    @server.tool(
        description="Pause a task: no scheduled or event run starts until resume_task. Allowed when active or paused.",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True, open_world_hint=False),
    )
    async def pause_task(task_id: TaskIdArg) -> models.Task:
        return await tools.call(lambda c: c.tasks.pause(task_id))

    @server.tool(
        description="Resume a paused task. next_run_at is computed from now: fires missed while paused are not run.",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True, open_world_hint=False),
    )
    async def resume_task(task_id: TaskIdArg) -> models.Task:
        return await tools.call(lambda c: c.tasks.resume(task_id))

    @server.tool(
        description="""Snooze an active task: its next scheduled execution moves delay_seconds later (1 s to
7 days); the cadence after it is unchanged. Sets snoozed_until and snooze_reason. Each call moves it
again, so call it once.""",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=False),
    )
    async def snooze_task(
        task_id: TaskIdArg,
        delay_seconds: Annotated[int, Field(ge=1, le=604_800, description="How much later, in seconds (1–604800).")],
        reason: Annotated[str | None, Field(max_length=500, description="Why, shown on the task.")] = None,
    ) -> models.Task:
        return await tools.call(lambda c: c.tasks.snooze(task_id, delay_seconds, reason))

    @server.tool(
        description="Cancel a task forever: pending runs are skipped and it can no longer change. Idempotent.",
        annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    async def cancel_task(task_id: TaskIdArg) -> models.Task:
        return await tools.call(lambda c: c.tasks.cancel(task_id))

    @server.tool(
        description="""Run a task once now, outside its schedule (allowed when active, paused or completed);
next_run_at is unchanged. Returns the queued run: follow it with get_run.""",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    )
    async def run_task_now(
        task_id: TaskIdArg,
        input: Annotated[
            dict[str, Any] | None, Field(description="An object the pipeline's templates see as `input`.")
        ] = None,
    ) -> models.Run:
        return await tools.call(lambda c: c.tasks.run_now(task_id, input))

    @server.tool(
        description=f"""Preview the next fire times of a schedule before creating a task (or of an existing
task with task_id). Each fire is given in UTC and in the schedule's local time; `dst` marks fires a
daylight-saving change moved or doubled.

{SCHEDULES}""",
        annotations=read_only,
    )
    async def preview_schedule(
        schedule_kind: Annotated[
            Literal["cron", "rrule", "once"] | None, Field(description="cron, rrule or once (omit with task_id).")
        ] = None,
        schedule_expr: Annotated[str | None, Field(description='The expression, e.g. "30 2 * * *".')] = None,
        timezone: Annotated[str, Field(description="IANA time zone, e.g. Europe/Chisinau.")] = "UTC",
        count: Annotated[int, Field(ge=1, le=100, description="How many fires, 1–100.")] = 5,
        after: Annotated[
            str | None, Field(description="Fires strictly after this RFC 3339 instant; default now.")
        ] = None,
        task_id: Annotated[str | None, Field(description="Preview this existing task's schedule instead.")] = None,
    ) -> SchedulePreviewResult:
        if task_id is not None:
            task = await tools.call(lambda c: c.tasks.get(task_id))
            result = await tools.call(lambda c: c.tasks.preview(task_id, count, after))
            kind, expr, tz = task.schedule_kind, task.schedule_expr, task.timezone
        else:
            if schedule_kind is None or schedule_expr is None:
                raise ToolError("schedule_kind and schedule_expr are required (or give task_id)")
            result = await tools.call(
                lambda c: c.schedules.preview(schedule_kind, schedule_expr, timezone=timezone, count=count, after=after)
            )
            kind, expr, tz = schedule_kind, schedule_expr, timezone
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        want = dst.wanted(kind, expr)
        return SchedulePreviewResult(
            description=result.description,
            timezone=tz,
            next_runs=[
                FirePreview(
                    utc=f"{t:%Y-%m-%dT%H:%M:%SZ}",
                    local=t.astimezone(zone).isoformat(),
                    dst=dst.note(t, zone, want) or None,
                )
                for t in result.next_runs
            ],
        )

    @server.tool(
        description="""A task's runs, newest first: status (queued, running, retrying, succeeded, failed,
skipped), trigger, attempts, timings and error. Page with next_cursor.""",
        annotations=read_only,
    )
    async def list_runs(
        task_id: TaskIdArg,
        limit: Annotated[int, Field(ge=1, le=200, description="Page size, 1–200.")] = 10,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    ) -> RunPage:
        page = await tools.call(lambda c: c.runs.page(task_id, limit=limit, cursor=cursor))
        return RunPage(runs=page.runs, next_cursor=page.next_cursor)

    @server.tool(
        description="One run in full: each step's status, output (≤ 8 KiB) and error.",
        annotations=read_only,
    )
    async def get_run(
        task_id: TaskIdArg,
        run_id: Annotated[str, Field(min_length=1, max_length=200, description="The run's id (from list_runs).")],
    ) -> models.Run:
        return await tools.call(lambda c: c.runs.get(task_id, run_id))

    @server.tool(
        description="""Publish an event. Each of your active event tasks whose pattern matches the name
("order.created" matches "order.created", "order.*" and "*") starts one run; the result lists them.""",
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    )
    async def send_event(
        name: Annotated[
            str,
            Field(
                min_length=1,
                max_length=256,
                pattern=r"^[A-Za-z0-9._:-]+$",
                description='Event name, e.g. "order.created".',
            ),
        ],
        data: Annotated[dict[str, Any] | None, Field(description="An object the runs see as event.data.")] = None,
    ) -> models.EventAccepted:
        return await tools.call(lambda c: c.events.send(name, data))

    # Resources: a task and a run, readable by URI (the tools remain the way to act).
    @server.resource(
        "tasks://tasks/{task_id}", name="task", description="A task as JSON.", mime_type="application/json"
    )
    async def task_resource(task_id: str) -> str:
        task = await tools.read(lambda c: c.tasks.get(task_id))
        return task.model_dump_json()

    @server.resource(
        "tasks://tasks/{task_id}/runs/{run_id}",
        name="run",
        description="A run as JSON.",
        mime_type="application/json",
    )
    async def run_resource(task_id: str, run_id: str) -> str:
        run = await tools.read(lambda c: c.runs.get(task_id, run_id))
        return run.model_dump_json()

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tasks-mcp", description="MCP server for the Tasks API.")
    parser.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http: address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="streamable-http: port (default 8765)")
    parser.add_argument("--url", help="API URL (default TASKS_API_URL)")
    args = parser.parse_args(argv)
    # httpx logs every request at INFO; on stdio only stderr is free, and the lines are noise there.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    server = build_server(args.url)  # the token only from the environment: argv is visible to ps
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
