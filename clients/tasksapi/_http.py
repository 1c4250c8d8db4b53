"""What the sync and async clients share: a request description (`Call`), the retry decision
(a pure function), and turning an answer into a model or an `ApiError`."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from tasksapi import errors

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

VERSION = "0.1.0"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
MAX_RETRY_WAIT = 60.0  # a Retry-After longer than this is not waited out: the error is raised
BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0

# Answers worth another try: the request was refused before anything happened (429 with a
# Retry-After), or the server failed in a way that may pass (5xx).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer.

    `retry_safe` says the request may be sent again after an ambiguous failure (a timeout, a
    5xx): reads, idempotent changes (pause, resume, cancel, PUT), and a create that carries an
    Idempotency-Key. A snooze, run_now or event is never re-sent then: the first may have
    taken effect. A request the server refused (429) or never received (connect error) is
    always safe to send again.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    retry_safe: bool = False
    # A create whose Idempotency-Key is still being processed (a first try that timed out on our
    # side) answers 409 "in progress": worth another try. A key reused with another body gets
    # 409 too, and gets it again: the retries end with that error.
    retry_conflict: bool = False


def model(cls: type[M]) -> Callable[[Any], M]:
    return cls.model_validate


def raw(body: Any) -> Any:
    return body


def seg(value: str) -> str:
    """A path segment: ids are quoted so a hostile id cannot change the route."""
    from urllib.parse import quote

    value = str(value)
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def timestamp(value: datetime | str | None) -> str | None:
    """A datetime as the API writes timestamps (UTC, `Z`); strings pass through."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("a datetime must be timezone-aware (naive times are ambiguous)")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def if_match(version: int | str | None) -> dict[str, str]:
    if version is None:
        return {}
    text = str(version)
    return {"If-Match": text if text.startswith(('"', "W/")) else f'"{text}"'}


def idempotency_key(given: str | None) -> str:
    return given or f"tasksapi-{uuid.uuid4()}"


def compact(**values: Any) -> dict[str, Any]:
    """Drop the arguments left at None, so the server's defaults apply."""
    return {k: v for k, v in values.items() if v is not None}


def headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, application/problem+json",
        "User-Agent": f"tasksapi-python/{VERSION}",
    }


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def retry_delay(call: Call[Any], attempt: int, max_retries: int, outcome: httpx.Response | Exception) -> float | None:
    """Seconds to wait before sending `call` again, or None to stop. `attempt` counts the
    tries made so far (1 after the first)."""
    if attempt > max_retries:
        return None
    if isinstance(outcome, Exception):
        if isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return backoff(attempt)  # never reached the server
        if isinstance(outcome, httpx.TransportError) and call.retry_safe:
            return backoff(attempt)
        return None
    status = outcome.status_code
    if status == 409 and call.retry_conflict:
        return backoff(attempt)
    if status not in RETRY_STATUSES:
        return None
    wait = errors.parse_retry_after(outcome.headers.get("retry-after"))
    if status == 429:
        # Without Retry-After a 429 is a quota (e.g. tasks per agent): waiting does not help.
        if wait is None or wait > MAX_RETRY_WAIT:
            return None
        return wait
    if not call.retry_safe:
        return None
    if wait is not None:
        return wait if wait <= MAX_RETRY_WAIT else None
    return backoff(attempt)


def result(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise errors.from_response(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    try:
        body = response.json()
    except ValueError:
        raise errors.ServerError(
            response.status_code, "Unreadable answer", f"the API answered non-JSON: {response.text[:200]!r}"
        ) from None
    return call.parse(body)


def network_error(call: Call[Any], exc: Exception) -> errors.NetworkError:
    return errors.NetworkError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")
