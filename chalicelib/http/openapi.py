"""The OpenAPI 3.1 document, generated from the route registry and the pydantic models
that validate requests, so the document cannot drift from the code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.domain import contracts
from chalicelib.platform.config import settings


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (name, JSON schema, description)
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)


OPERATIONS: list[Operation] = []
# Request headers whose values are not free text.
_HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255},
    "If-Match": {"type": "string", "pattern": r'^\s*(\*|(W/)?"?[0-9]{1,18}"?)\s*$'},
}


@lru_cache(maxsize=1)
def _zones() -> list[str]:
    # Reading the zone database takes most of a second: once per process, and only here.
    from zoneinfo import available_timezones

    return sorted(available_timezones() - {"localtime", "posixrules"})


def _name_the_zones(components: dict[str, Any]) -> None:
    """Every `timezone` field accepts exactly the IANA zone names the engine can load: one shared
    enum (the validator's truth), not a bare string that a generated client would fill wrongly."""
    components["TimeZone"] = {"type": "string", "enum": _zones(), "description": "An IANA time zone name"}
    for model in components.values():
        prop = model.get("properties", {}).get("timezone")
        if isinstance(prop, dict) and prop.get("type") == "string":
            model["properties"]["timezone"] = {"$ref": "#/components/schemas/TimeZone", "default": prop.get("default")}


def _header_schema(name: str) -> dict[str, Any]:
    if name == "X-Tasks-Event-Depth":  # the event it sends is one deeper, at most the chain limit
        return {"type": "integer", "minimum": 0, "maximum": settings().event_chain_limit - 1}
    return _HEADER_SCHEMAS.get(name, {"type": "string"})


def int_param(lo: int, hi: int | None, default: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": lo, "default": default}
    if hi is not None:
        schema["maximum"] = hi
    return schema


def _error_codes(op: Operation) -> set[int]:
    """Every 4xx the route can answer: 400 always (a bad query or header), 401 with auth, and on
    every write 413 (any body over the limit, even one the route ignores) and 429 (the agent's rate
    limit), besides the route's own."""
    codes = {400, *op.errors}
    if op.auth:
        codes.add(401)
    if op.method != "GET":
        codes.add(413)
        if op.auth:
            codes.add(429)
    return codes


def _task_link(operation: str, **extra: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": {"task_id": "$response.body#/id", **extra}}


# OpenAPI links: how a client (or a stateful fuzzer) gets from a created task to what it can do.
_FROM_TASK = {
    "GetTask": _task_link("get_tasks_task_id"),
    "UpdateTask": _task_link("put_tasks_task_id"),
    "PauseTask": _task_link("post_tasks_task_id_pause"),
    "ResumeTask": _task_link("post_tasks_task_id_resume"),
    "SnoozeTask": _task_link("post_tasks_task_id_snooze"),
    "RunTaskNow": _task_link("post_tasks_task_id_run_now"),
    "CancelTask": _task_link("post_tasks_task_id_cancel"),
    "PreviewTask": _task_link("get_tasks_task_id_preview"),
    "ListRuns": _task_link("get_tasks_task_id_runs"),
}
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/tasks"): _FROM_TASK,
    ("PUT", "/tasks/{task_id}"): _FROM_TASK,
    ("POST", "/tasks/{task_id}/run_now"): {
        "GetRun": {
            "operationId": "get_tasks_task_id_runs_run_id",
            "parameters": {"task_id": "$response.body#/run/task_id", "run_id": "$response.body#/run/id"},
        }
    },
}


def document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {contracts.Problem}
    for op in OPERATIONS:
        models.update(m for m in (op.request, op.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema([(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})
    _name_the_zones(components)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        params: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)}", op.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "schema": schema, "description": d}
            for n, schema, d in op.query
        ]
        params += [
            {
                "name": n,
                "in": "header",
                "required": False,
                "schema": _header_schema(n),
                "description": d,
            }
            for n, d in op.headers
        ]
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', op.path.lower()).strip('_')}",
            "responses": {
                str(op.status): {
                    "description": "OK",
                    **(
                        {
                            "content": {
                                "application/json": {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}
                            }
                        }
                        if op.response
                        else {}
                    ),
                },
                **{
                    str(code): {
                        "description": _ERROR_TEXT[code],
                        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    }
                    for code in sorted(_error_codes(op))
                },
            },
        }
        if op.tags:
            entry["tags"] = list(op.tags)
        links = LINKS.get((op.method, op.path))
        if links:
            entry["responses"][str(op.status)]["links"] = links
        if params:
            entry["parameters"] = params
        if op.request is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.request.__name__}"}}},
            }
        if not op.auth:
            entry["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tasks API",
            "version": "1.0.0",
            "description": "Scheduled, retried, recorded pipelines for AI agents. See README.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_ERROR_TEXT = {
    400: "Invalid input: `errors` names each bad field",
    401: "Missing, unknown or revoked token",
    403: "Authenticated but not allowed",
    404: "Unknown id, or another agent's",
    409: "Not allowed in the task's current status",
    412: "If-Match does not match the task's version",
    413: "Body or payload over the size limit",
    429: "Quota or rate limit exceeded",
}
