"""Domain errors → RFC 9457 problem+json: the one place that knows HTTP statuses."""

from __future__ import annotations

from typing import Any

from chalicelib.domain import errors as e

# (status, title, type slug), looked up along the error's class hierarchy: most specific first.
_PROBLEMS: dict[type[e.DomainError], tuple[int, str, str]] = {
    e.InvalidInput: (400, "Invalid request", "invalid-request"),
    e.Unauthenticated: (401, "Unauthorized", "unauthorized"),
    e.Forbidden: (403, "Forbidden", "forbidden"),
    e.NotFound: (404, "Not Found", "not-found"),
    e.StateConflict: (409, "Conflict", "conflict"),
    e.VersionMismatch: (412, "Precondition Failed", "precondition-failed"),
    e.TooLarge: (413, "Payload Too Large", "payload-too-large"),
    e.RateLimited: (429, "Too Many Requests", "rate-limited"),
    e.QuotaExceeded: (429, "Too Many Requests", "quota-exceeded"),
}
INTERNAL = (500, "Internal Server Error", "internal")


def status_of(err: e.DomainError | None) -> tuple[int, str, str]:
    for cls in type(err).__mro__ if err is not None else ():
        if cls in _PROBLEMS:
            return _PROBLEMS[cls]
    return INTERNAL


def problem(err: e.DomainError | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, problem body, headers) for a domain error; None is the internal error."""
    status, title, slug = status_of(err)
    detail = (err.detail if err is not None else "") or (
        "an internal error occurred; it has been logged" if err is None else title
    )
    body: dict[str, Any] = {
        "type": f"https://tasks-api.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if err is not None and err.errors:
        body["errors"] = [{"field": f.field, "message": f.message} for f in err.errors]
    headers: dict[str, str] = {}
    if isinstance(err, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if err.invalid_token else "Bearer"
    if isinstance(err, e.RateLimited):
        headers["Retry-After"] = str(max(1, err.retry_after))
    return status, body, headers
