"""Errors. A problem+json answer becomes an `ApiError` of the class for its status, carrying
the problem's fields; a request that never got an answer is a `NetworkError`."""

from __future__ import annotations

from typing import Any

import httpx

from tasksapi.models import FieldError, Problem


class Error(Exception):
    """Base of every error the SDK raises."""


class ConfigError(Error):
    """The client is missing its URL or token (see `TASKS_API_URL` / `TASKS_API_TOKEN`)."""


class NetworkError(Error):
    """No HTTP answer: connection refused, DNS failure, timeout (after the retries)."""


class ApiError(Error):
    """An error answer from the API (RFC 9457 problem details).

    `status`, `title`, `detail`, `type` come from the problem document; `errors` lists the
    offending fields (`FieldError(field, message)`), empty unless the input was invalid.
    """

    status: int = 0

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[FieldError] | None = None,
        type: str = "about:blank",
        headers: httpx.Headers | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        self.headers = headers if headers is not None else httpx.Headers()
        self.body = body
        super().__init__(self.message())

    def message(self) -> str:
        """One readable line: status, title, detail, and each field error not already in it."""
        text = f"{self.status} {self.title}"
        if self.detail and self.detail != self.title:
            text += f": {self.detail}"
        missing = [f"{e.field}: {e.message}" for e in self.errors if f"{e.field}: {e.message}" not in self.detail]
        if missing:
            text += " (" + "; ".join(missing) + ")"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message()!r})"


class BadRequest(ApiError):
    """400: the input is invalid; `errors` names each field."""


class Unauthorized(ApiError):
    """401: missing, unknown or revoked token."""


class Forbidden(ApiError):
    """403: authenticated, not allowed (another agent's `created_by`, an admin route)."""


class NotFound(ApiError):
    """404: unknown id, or another agent's."""


class MethodNotAllowed(ApiError):
    """405."""


class Conflict(ApiError):
    """409: not allowed in the task's current status (e.g. changing a canceled task)."""


class PreconditionFailed(ApiError):
    """412: `If-Match` does not match the task's version: read it again, then retry."""


class PayloadTooLarge(ApiError):
    """413: body or payload over the size limit."""


class RateLimited(ApiError):
    """429: rate limit or quota exceeded; `retry_after` is the server's wait in seconds (or None)."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(ApiError):
    """5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    429: RateLimited,
}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds; the HTTP-date form is accepted too."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def from_response(response: httpx.Response) -> ApiError:
    """The error for a non-2xx answer; a body that is not problem+json still gives a readable one."""
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    if isinstance(body, dict):
        try:
            problem = Problem.model_validate(body)
        except ValueError:
            problem = Problem(status=status, title=response.reason_phrase, detail=str(body)[:500])
    else:
        problem = Problem(status=status, title=response.reason_phrase, detail=str(body or "").strip()[:500])
    return cls(
        status,
        problem.title or response.reason_phrase,
        problem.detail,
        list(problem.errors or []),
        problem.type,
        response.headers,
        body,
    )
