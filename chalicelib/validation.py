"""Turn pydantic's errors into the API's field errors."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from chalicelib.errors import BadRequest, FieldError, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("http", "lambda", "sqs", "sns", "eventbridge", "emit", "log") and parts and parts[-1].endswith("]"):
            continue  # the discriminated-union tag pydantic inserts: not a field the caller wrote
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    msg = str(err.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


def field_errors(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        fe = FieldError(_field(tuple(err["loc"])), _message(dict(err)))
        if (fe.field, fe.message) not in seen:
            seen.add((fe.field, fe.message))
            out.append(fe)
    return out


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise BadRequest.field("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = field_errors(e)
        raise BadRequest("; ".join(f"{f.field}: {f.message}" for f in errors), errors) from None


def json_body(raw: bytes | None, max_bytes: int, *, required: bool = True) -> Any:
    if raw is None or raw == b"":
        if required:
            raise BadRequest.field("body", "a JSON body is required")
        return {}
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest.field("body", f"is not valid JSON ({e})") from None
