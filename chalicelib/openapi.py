"""The OpenAPI 3.1 document, generated from the route registry and the pydantic models
that validate requests, so the document cannot drift from the code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib import contracts


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
    query: tuple[tuple[str, str, str], ...] = ()  # (name, json type, description)
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)


OPERATIONS: list[Operation] = []


def document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {contracts.Problem}
    for op in OPERATIONS:
        models.update(m for m in (op.request, op.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema([(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        params: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)}", op.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
            for n, t, d in op.query
        ]
        params += [
            {"name": n, "in": "header", "required": False, "schema": {"type": "string"}, "description": d}
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
                    for code in sorted(set(op.errors) | ({401} if op.auth else set()) | {400})
                },
            },
        }
        if op.tags:
            entry["tags"] = list(op.tags)
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
