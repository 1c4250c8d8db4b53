"""HTTP routes. Each handler parses, calls one domain function, and responds; errors
become problem+json here and nowhere else."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from chalice import Blueprint, Response
from pydantic import BaseModel

from chalicelib.domain import contracts
from chalicelib.domain.errors import DomainError, InvalidInput
from chalicelib.domain.validation import json_body, parse
from chalicelib.http import openapi, problems
from chalicelib.http.openapi import Operation
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import failure, logger
from chalicelib.services import agents, events, history, lifecycle, previews, ratelimit, tasks
from chalicelib.services.agents import Caller
from chalicelib.store import counters

bp = Blueprint(__name__)
JSON = "application/json"
Handler = Callable[..., Any]


def _response(status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = JSON) -> Response:
    return Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        headers={"Content-Type": content_type, "Cache-Control": "no-store", **(headers or {})},
    )


def problem(err: DomainError | None) -> Response:
    """problem+json for a domain error (None: the internal error)."""
    status, body, headers = problems.problem(err)
    return _response(status, body, headers, "application/problem+json")


def route(
    path: str,
    method: str,
    summary: str,
    *,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: bool = True,
    errors: tuple[int, ...] = (),
    query: tuple[tuple[str, dict[str, Any], str], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    tag: str = "",
) -> Callable[[Handler], Handler]:
    """Register a route and its OpenAPI operation. The handler gets (request, caller, **params)
    and returns (status, body[, headers]) or a body for `status`."""
    openapi.OPERATIONS.append(
        Operation(path, method, summary, request, response, status, auth, errors, query, headers, (tag,) if tag else ())
    )

    def deco(fn: Handler) -> Handler:
        # Any Content-Type: the body is always read as JSON (a 400 names it otherwise), so a bare
        # `curl -d '{…}'` (form-encoded by default) works instead of meeting a 415.
        @bp.route(path, methods=[method], content_types=["*/*"])
        @functools.wraps(fn)
        def handler(**params: str) -> Response:
            req = bp.current_request
            try:
                caller = agents.authenticate(req.headers.get("authorization")) if auth else None
                if req.raw_body and len(req.raw_body) > settings().max_body_bytes:
                    raise_too_large(len(req.raw_body))
                if caller is not None and caller.agent_id is not None and method != "GET":
                    bucket: ratelimit.Bucket = "events" if path == "/events" else "writes"
                    ratelimit.take(caller.agent_id, bucket, int(wiring.now_precise().timestamp() * 1000))
                result = fn(req, caller, **params)
                if isinstance(result, Response):
                    return result
                if isinstance(result, tuple):
                    return _response(*result)
                return _response(status, result)
            except DomainError as err:
                return problem(err)
            except Exception as exc:  # noqa: BLE001 - the last line of defence: never leak a stack trace
                logger.error("unhandled_error", extra={"path": path, "method": method, **failure(exc)})
                return problem(None)

        return handler

    return deco


def raise_too_large(size: int) -> None:
    from chalicelib.domain.errors import TooLarge

    raise TooLarge(f"request body is {size} bytes; the limit is {settings().max_body_bytes}")


def body(req: Any, *, required: bool = True) -> Any:
    return json_body(req.raw_body, settings().max_body_bytes, required=required)


def query(req: Any) -> dict[str, str]:
    return dict(req.query_params or {})


def task_response(task: Any, status: int = 200, extra: dict[str, str] | None = None) -> Response:
    now = wiring.now()
    rep = tasks.represent(task, now, counters.read(task.task_id))  # reads only: a GET never writes
    return _response(status, rep, {"ETag": f'"{rep["version"]}"', **(extra or {})})


# ---- public --------------------------------------------------------------------------------


@route("/health", "GET", "Liveness and readiness", response=contracts.Health, auth=False, tag="meta")
def health(req: Any, caller: None) -> Any:
    return {"status": "ok"}


@route("/openapi.json", "GET", "This document", auth=False, tag="meta")
def openapi_document(req: Any, caller: None) -> Any:
    return openapi.document()


# ---- agents (admin) ------------------------------------------------------------------------


@route(
    "/agents",
    "POST",
    "Create an agent; its token and signing secret are shown only here",
    request=contracts.AgentCreate,
    response=contracts.AgentCreated,
    status=201,
    errors=(403,),
    tag="agents",
)
def create_agent(req: Any, caller: Caller) -> Any:
    caller.require_admin()
    spec = parse(contracts.AgentCreate, body(req))
    agent = agents.create_agent(spec.name)
    return 201, agent, {"Location": f"/agents/{agent['agent_id']}"}


@route("/agents", "GET", "List agents", response=contracts.AgentList, errors=(403,), tag="agents")
def list_agents(req: Any, caller: Caller) -> Any:
    caller.require_admin()
    return {"agents": agents.list_agents()}


@route(
    "/agents/{agent_id}/revoke",
    "POST",
    "Revoke an agent's token (effective on the next request)",
    response=contracts.Agent,
    errors=(403, 404),
    tag="agents",
)
def revoke_agent(req: Any, caller: Caller, agent_id: str) -> Any:
    caller.require_admin()
    return agents.revoke_agent(agent_id)


@route(
    "/agents/{agent_id}/egress",
    "PUT",
    "Set what the agent's steps may reach: AWS targets and HTTP allow entries (replaces both lists)",
    request=contracts.EgressUpdate,
    response=contracts.Egress,
    errors=(403, 404),
    tag="agents",
)
def set_agent_egress(req: Any, caller: Caller, agent_id: str) -> Any:
    caller.require_admin()
    spec = parse(contracts.EgressUpdate, body(req))
    return agents.set_egress(agent_id, spec.aws_targets, spec.http_allow)


@route(
    "/agents/{agent_id}/egress",
    "GET",
    "What the agent's steps may reach (the admin, or the agent itself)",
    response=contracts.Egress,
    errors=(403, 404),
    tag="agents",
)
def get_agent_egress(req: Any, caller: Caller, agent_id: str) -> Any:
    return agents.get_egress(caller, agent_id)


@route(
    "/agents/{agent_id}/budget",
    "PUT",
    "Set the agent's run budget: runs a minute, burst, runs in flight, minimum schedule interval",
    request=contracts.BudgetUpdate,
    response=contracts.Budget,
    errors=(403, 404),
    tag="agents",
)
def set_agent_budget(req: Any, caller: Caller, agent_id: str) -> Any:
    caller.require_admin()
    spec = parse(contracts.BudgetUpdate, body(req))
    return agents.set_budget(agent_id, spec.model_dump())


@route(
    "/agents/{agent_id}/budget",
    "GET",
    "The agent's run budget: what applies, its own values and the defaults (the admin, or the agent itself)",
    response=contracts.Budget,
    errors=(403, 404),
    tag="agents",
)
def get_agent_budget(req: Any, caller: Caller, agent_id: str) -> Any:
    return agents.get_budget(caller, agent_id)


# ---- tasks ---------------------------------------------------------------------------------


@route(
    "/tasks",
    "POST",
    "Create a task",
    request=contracts.TaskCreate,
    response=contracts.Task,
    status=201,
    errors=(403, 409, 413, 429),
    headers=(("Idempotency-Key", "Replays return the first response for 24 h"),),
    tag="tasks",
)
def create_task(req: Any, caller: Caller) -> Any:
    created = tasks.create_task(caller, body(req), req.headers.get("idempotency-key"), wiring.now())
    if created.replay is not None:  # the first response to this Idempotency-Key, as it was sent
        first = created.replay
        return Response(first["body"], {**first["headers"], "Content-Type": JSON}, first["status"])
    assert created.task is not None
    response = task_response(created.task, 201, {"Location": f"/tasks/{created.task.task_id}"})
    if created.idempotency_key is not None:
        keep = {k: str(v) for k, v in response.headers.items() if k in ("ETag", "Location", "Cache-Control")}
        tasks.remember_response(created.idempotency_key, response.status_code, response.body, keep)
    return response


@route(
    "/tasks",
    "GET",
    "List the caller's tasks, newest first",
    response=contracts.TaskList,
    errors=(403,),
    query=(
        (
            "status",
            {"type": "string", "enum": ["active", "paused", "canceled", "completed"]},
            "Only tasks in this status",
        ),
        ("created_by", {"type": "string", "format": "uuid"}, "Only this agent's tasks (an agent sees only its own)"),
        ("schedule_kind", {"type": "string", "enum": ["cron", "rrule", "once", "event"]}, "Only this kind"),
        ("limit", openapi.int_param(1, 200, 50), "Page size"),
        ("offset", openapi.int_param(0, None, 0), "Tasks to skip"),
    ),
    tag="tasks",
)
def list_tasks(req: Any, caller: Caller) -> Any:
    return tasks.list_tasks(caller, query(req), wiring.now())


@route("/tasks/{task_id}", "GET", "Get a task", response=contracts.Task, errors=(404,), tag="tasks")
def get_task(req: Any, caller: Caller, task_id: str) -> Any:
    return task_response(tasks.load(caller, task_id))


@route(
    "/tasks/{task_id}",
    "PUT",
    "Update a task (partial)",
    request=contracts.TaskUpdate,
    response=contracts.Task,
    errors=(404, 409, 412, 413),
    headers=(("If-Match", "The version you read (ETag)"),),
    tag="tasks",
)
def update_task(req: Any, caller: Caller, task_id: str) -> Any:
    task = tasks.update_task(caller, task_id, body(req), req.headers.get("if-match"), wiring.now())
    return task_response(task)


# ---- lifecycle -----------------------------------------------------------------------------


def _lifecycle(name: str, summary: str, request: type[BaseModel] | None = None) -> Callable[[Handler], Handler]:
    return route(
        f"/tasks/{{task_id}}/{name}",
        "POST",
        summary,
        request=request,
        response=contracts.Task,
        errors=(404, 409),
        tag="lifecycle",
    )


@_lifecycle("pause", "Pause: no scheduled or event run starts while paused")
def pause_task(req: Any, caller: Caller, task_id: str) -> Any:
    return task_response(lifecycle.pause(caller, task_id, wiring.now()))


@_lifecycle("resume", "Resume: the next fire is computed from now")
def resume_task(req: Any, caller: Caller, task_id: str) -> Any:
    return task_response(lifecycle.resume(caller, task_id, wiring.now()))


@_lifecycle("cancel", "Cancel forever (idempotent)")
def cancel_task(req: Any, caller: Caller, task_id: str) -> Any:
    return task_response(lifecycle.cancel(caller, task_id, wiring.now()))


@_lifecycle("snooze", "Move the next scheduled execution later", contracts.SnoozeRequest)
def snooze_task(req: Any, caller: Caller, task_id: str) -> Any:
    return task_response(lifecycle.snooze(caller, task_id, body(req), wiring.now()))


@route(
    "/tasks/{task_id}/run_now",
    "POST",
    "Run once now, outside the schedule",
    request=contracts.RunNowRequest,
    response=contracts.RunAccepted,
    status=202,
    errors=(404, 409),
    tag="lifecycle",
)
def run_now(req: Any, caller: Caller, task_id: str) -> Any:
    return 202, {"run": lifecycle.run_now(caller, task_id, body(req, required=False), wiring.now())}


# ---- schedules -----------------------------------------------------------------------------


@route(
    "/tasks/{task_id}/preview",
    "GET",
    "The task's next fire instants",
    response=contracts.SchedulePreview,
    errors=(404,),
    query=(
        ("count", openapi.int_param(1, 100, 10), "How many fires"),
        ("after", {"type": "string", "format": "date-time"}, "RFC 3339 (years 0001–9999), default now"),
    ),
    tag="schedules",
)
def preview_task(req: Any, caller: Caller, task_id: str) -> Any:
    return previews.for_task(tasks.load(caller, task_id), query(req), wiring.now())


@route(
    "/schedules/preview",
    "POST",
    "Check an expression before creating a task",
    request=contracts.SchedulePreviewRequest,
    response=contracts.SchedulePreview,
    tag="schedules",
)
def preview_schedule(req: Any, caller: Caller) -> Any:
    return previews.for_request(body(req), wiring.now())


# ---- runs and events -----------------------------------------------------------------------


@route(
    "/tasks/{task_id}/runs",
    "GET",
    "The task's runs, newest first",
    response=contracts.RunList,
    errors=(404,),
    query=(
        ("limit", openapi.int_param(1, 200, 50), "Page size"),
        ("cursor", {"type": "string", "maxLength": 256}, "next_cursor of the previous page"),
    ),
    tag="runs",
)
def list_runs(req: Any, caller: Caller, task_id: str) -> Any:
    return history.list_runs(tasks.load(caller, task_id), query(req), wiring.now())


@route(
    "/tasks/{task_id}/runs/{run_id}",
    "GET",
    "One run with its attempts' outcome and step outputs",
    response=contracts.Run,
    errors=(404,),
    tag="runs",
)
def get_run(req: Any, caller: Caller, task_id: str, run_id: str) -> Any:
    return history.get_run(tasks.load(caller, task_id), run_id, wiring.now())


@route(
    "/events",
    "POST",
    "Publish an event: starts the caller's matching event tasks",
    request=contracts.EventCreate,
    response=contracts.EventAccepted,
    status=202,
    errors=(413,),
    # X-Tasks-Event-Chain (docs/api.md) is set by HTTP steps only and not declared here: with two
    # header parameters, Schemathesis sends an unknown header as "invalid" data and expects a 4xx.
    headers=(("X-Tasks-Event-Depth", "Set by HTTP steps: the chain depth of the run that sends this event"),),
    tag="events",
)
def post_event(req: Any, caller: Caller) -> Any:
    depth = _event_depth(req.headers.get("x-tasks-event-depth"))
    return 202, events.post_event(
        caller, body(req), wiring.now(), depth, _event_chain(req.headers.get("x-tasks-event-chain"))
    )


def _event_chain(value: str | None) -> str | None:
    """The chain a task's HTTP step continues (an event id): its runs count against the same
    bound. Absent: the event starts a chain of its own."""
    if value is None:
        return None
    if not _EVENT_ID.fullmatch(value):
        raise InvalidInput.field("X-Tasks-Event-Chain", "must be an event id (as POST /events answers it)")
    return value


_EVENT_ID = re.compile(r"[0-9]{10}-[0-9a-f]{16}")


def _event_depth(value: str | None) -> int:
    """A POST /events made by a task's own HTTP step carries its run's chain depth: the event
    is one deeper, so a loop through the API meets the same chain limit as `emit`."""
    if value is None:
        return 0
    v = value.strip()
    if not (v.isascii() and v.isdigit() and len(v) <= 4):
        raise InvalidInput.field("X-Tasks-Event-Depth", "must be a small non-negative integer")
    return int(v) + 1
