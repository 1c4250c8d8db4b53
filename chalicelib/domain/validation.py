"""Turn pydantic's errors into the API's field errors."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from chalicelib.domain.errors import FieldError, InvalidInput, TooLarge

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
        raise InvalidInput.field("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = field_errors(e)
        raise InvalidInput("; ".join(f"{f.field}: {f.message}" for f in errors), errors) from None


# How deep a request body may nest, counted from the body itself ({"a": [1]} is 2 deep). Deeper
# documents cost recursion everywhere they travel (validation, templates, serialisation).
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def json_problem(value: Any) -> FieldError | None:
    """The first thing in a parsed document that JSON can't carry faithfully: NaN or
    ±Infinity (Python's parser accepts them, and 1e999 becomes inf), a lone UTF-16 surrogate
    (valid as an escape, but no UTF-8 encoder can write it back), or nesting deeper than
    MAX_JSON_DEPTH. Iterative, so depth costs no recursion; one pass over the document."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return FieldError(path or "body", "must be a finite number (NaN and Infinity are not JSON)")
        if isinstance(v, str) and _SURROGATE.search(v):
            return FieldError(path or "body", "contains a lone UTF-16 surrogate, which is not valid Unicode text")
        if isinstance(v, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return FieldError(path or "body", f"nests deeper than {MAX_JSON_DEPTH} levels")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, item in items:
                if isinstance(k, str) and _SURROGATE.search(k):
                    return FieldError(_path(path, "?"), "a key contains a lone UTF-16 surrogate")
                stack.append((item, _path(path, k), depth + 1))
    return None


def stored_size(value: Any) -> int:
    """Bytes `value` takes once stored: PynamoDB writes JSON attributes with ASCII escapes, so a
    non-ASCII character costs up to 6 bytes (12 outside the BMP), not its UTF-8 length."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


def json_body(raw: bytes | None, max_bytes: int, *, required: bool = True) -> Any:
    if raw is None or raw == b"":
        if required:
            raise InvalidInput.field("body", "a JSON body is required")
        return {}
    if len(raw) > max_bytes:
        raise TooLarge(f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidInput.field("body", f"is not valid JSON ({e})") from None
    bad = json_problem(value)
    if bad is not None:
        raise InvalidInput(f"{bad.field}: {bad.message}", [bad])
    return value


def scrub(value: Any, depth: int = 0) -> Any:
    """What we store of a document we did not validate (a target's response): lone surrogates
    become U+FFFD, NaN/Infinity become strings, and nesting past MAX_JSON_DEPTH is cut, so the
    run record that holds it can always be written and served."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            return f"[nested deeper than {MAX_JSON_DEPTH} levels: cut]"
        if isinstance(value, dict):
            return {scrub(k): scrub(v, depth + 1) for k, v in value.items()}
        return [scrub(v, depth + 1) for v in value]
    return value


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
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
