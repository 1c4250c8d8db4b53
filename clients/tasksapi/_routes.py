"""Every route of the API as a `Call`: built here once, sent by the sync or the async client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tasksapi import models
from tasksapi._http import Call, compact, idempotency_key, if_match, model, raw, seg, timestamp

Time = datetime | str | None


def health() -> Call[models.Health]:
    return Call("GET", "/health", model(models.Health), retry_safe=True)


def openapi() -> Call[dict[str, Any]]:
    return Call("GET", "/openapi.json", raw, retry_safe=True)


# ---- tasks ---------------------------------------------------------------------------------


def create_task(fields: dict[str, Any], key: str | None) -> Call[models.Task]:
    body = models.TaskCreate(**fields).body()
    # The key is fixed before the first try, so a retried create returns the first task.
    return Call(
        "POST",
        "/tasks",
        model(models.Task),
        json=body,
        headers={"Idempotency-Key": idempotency_key(key)},
        retry_safe=True,
        retry_conflict=True,
    )


def list_tasks(
    *, status: str | None, created_by: str | None, schedule_kind: str | None, limit: int, offset: int
) -> Call[models.TaskList]:
    params = compact(status=status, created_by=created_by, schedule_kind=schedule_kind, limit=limit, offset=offset)
    return Call("GET", "/tasks", model(models.TaskList), params=params, retry_safe=True)


def get_task(task_id: str) -> Call[models.Task]:
    return Call("GET", f"/tasks/{seg(task_id)}", model(models.Task), retry_safe=True)


def update_task(task_id: str, fields: dict[str, Any], version: int | str | None) -> Call[models.Task]:
    body = models.TaskUpdate(**fields).body()
    # A partial PUT sets the same values again when repeated: safe to re-send.
    return Call(
        "PUT", f"/tasks/{seg(task_id)}", model(models.Task), json=body, headers=if_match(version), retry_safe=True
    )


def lifecycle(task_id: str, action: str) -> Call[models.Task]:
    # pause, resume and cancel are idempotent (pause → paused again is a 200).
    return Call("POST", f"/tasks/{seg(task_id)}/{action}", model(models.Task), json={}, retry_safe=True)


def snooze(task_id: str, delay_seconds: int, reason: str | None) -> Call[models.Task]:
    body = models.SnoozeRequest(**compact(delay_seconds=delay_seconds, reason=reason)).body()
    return Call("POST", f"/tasks/{seg(task_id)}/snooze", model(models.Task), json=body)


def run_now(task_id: str, input: dict[str, Any] | None) -> Call[models.Run]:
    body = models.RunNowRequest(**compact(input=input)).body()
    return Call("POST", f"/tasks/{seg(task_id)}/run_now", lambda b: models.RunAccepted.model_validate(b).run, json=body)


def preview_task(task_id: str, count: int | None, after: Time) -> Call[models.SchedulePreview]:
    params = compact(count=count, after=timestamp(after))
    return Call("GET", f"/tasks/{seg(task_id)}/preview", model(models.SchedulePreview), params=params, retry_safe=True)


# ---- runs, schedules, events ---------------------------------------------------------------


def list_runs(task_id: str, limit: int, cursor: str | None) -> Call[models.RunList]:
    params = compact(limit=limit, cursor=cursor)
    return Call("GET", f"/tasks/{seg(task_id)}/runs", model(models.RunList), params=params, retry_safe=True)


def get_run(task_id: str, run_id: str) -> Call[models.Run]:
    return Call("GET", f"/tasks/{seg(task_id)}/runs/{seg(run_id)}", model(models.Run), retry_safe=True)


def preview_schedule(
    schedule_kind: str,
    schedule_expr: str | None,
    *,
    timezone: str | None,
    count: int | None,
    after: Time,
    jitter_seconds: int | None,
    starts_at: Time,
    ends_at: Time,
) -> Call[models.SchedulePreview]:
    body = models.SchedulePreviewRequest(
        **compact(
            schedule_kind=schedule_kind,
            schedule_expr=schedule_expr,
            timezone=timezone,
            count=count,
            after=timestamp(after),
            jitter_seconds=jitter_seconds,
            starts_at=timestamp(starts_at),
            ends_at=timestamp(ends_at),
        )
    ).body()
    return Call("POST", "/schedules/preview", model(models.SchedulePreview), json=body, retry_safe=True)


def send_event(name: str, data: dict[str, Any] | None) -> Call[models.EventAccepted]:
    body = models.EventCreate(**compact(name=name, data=data)).body()
    return Call("POST", "/events", model(models.EventAccepted), json=body)


# ---- agents (admin) ------------------------------------------------------------------------


def create_agent(name: str) -> Call[models.AgentCreated]:
    return Call("POST", "/agents", model(models.AgentCreated), json=models.AgentCreate(name=name).body())


def list_agents() -> Call[list[models.Agent]]:
    return Call("GET", "/agents", lambda b: models.AgentList.model_validate(b).agents, retry_safe=True)


def revoke_agent(agent_id: str) -> Call[models.Agent]:
    return Call("POST", f"/agents/{seg(agent_id)}/revoke", model(models.Agent), json={}, retry_safe=True)


def get_egress(agent_id: str) -> Call[models.Egress]:
    return Call("GET", f"/agents/{seg(agent_id)}/egress", model(models.Egress), retry_safe=True)


def set_egress(agent_id: str, aws_targets: list[str], http_allow: list[str]) -> Call[models.Egress]:
    body = models.EgressUpdate(aws_targets=aws_targets, http_allow=http_allow).body()
    # A PUT replaces both lists: sending it twice leaves the same state.
    return Call("PUT", f"/agents/{seg(agent_id)}/egress", model(models.Egress), json=body, retry_safe=True)


def get_budget(agent_id: str) -> Call[models.Budget]:
    return Call("GET", f"/agents/{seg(agent_id)}/budget", model(models.Budget), retry_safe=True)


def set_budget(agent_id: str, update: models.BudgetUpdate) -> Call[models.Budget]:
    # A PUT replaces the budget: sending it twice leaves the same state.
    body = update.body()
    return Call("PUT", f"/agents/{seg(agent_id)}/budget", model(models.Budget), json=body, retry_safe=True)
