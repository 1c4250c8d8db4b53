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


def query_int(query: dict[str, str], name: str, default: int, lo: int, hi: int | None, errors: list[FieldError]) -> int:
    """An integer query parameter in [lo, hi]; a bad value is added to `errors` (all reported at once)."""
    try:
        value = int(query.get(name, str(default)))
        if value < lo or (hi is not None and value > hi):
            raise ValueError
        return value
    except ValueError:
        bounds = f"between {lo} and {hi}" if hi is not None else f"≥ {lo}"
        errors.append(FieldError(name, f"must be an integer {bounds}"))
        return default


def unknown_query(query: dict[str, str], allowed: set[str]) -> list[FieldError]:
    return [FieldError(k, "unknown query parameter") for k in sorted(set(query) - allowed)]


def raise_if(errors: list[FieldError]) -> None:
    if errors:
        raise BadRequest("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
