"""The Tasks API's Python SDK.

import tasksapi
with tasksapi.Client() as client:          # TASKS_API_URL, TASKS_API_TOKEN
    task = client.tasks.create(title="Nightly", description="", schedule_kind="cron",
                               schedule_expr="30 2 * * *", timezone="Europe/Chisinau",
                               payload={"steps": [{"id": "log", "type": "log", "message": "hi"}]})
    for run in client.runs.list(task.id):
        print(run.status)
"""

from __future__ import annotations

from tasksapi import webhooks
from tasksapi._http import VERSION as __version__
from tasksapi.client import AsyncClient, Client
from tasksapi.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    Error,
    Forbidden,
    MethodNotAllowed,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unauthorized,
)
from tasksapi.models import Agent, AgentCreated, EventAccepted, FieldError, Run, SchedulePreview, StepResult, Task

__all__ = [
    "Agent",
    "AgentCreated",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConfigError",
    "Conflict",
    "Error",
    "EventAccepted",
    "FieldError",
    "Forbidden",
    "MethodNotAllowed",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RateLimited",
    "Run",
    "SchedulePreview",
    "ServerError",
    "StepResult",
    "Task",
    "Unauthorized",
    "__version__",
    "webhooks",
]
