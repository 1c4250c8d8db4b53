"""What can go wrong, named for the domain. No HTTP here: `chalicelib/http/problems.py` maps
each class to its status and problem+json in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    """Base of every error a caller may see. `detail` is safe to show to the caller that caused it;
    `errors` names the fields at fault."""

    def __init__(self, detail: str = "", errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def field(cls, field: str, message: str) -> DomainError:
        return cls(f"{field}: {message}", [FieldError(field, message)])

    @classmethod
    def fields(cls, errors: list[FieldError]) -> DomainError:
        return cls("; ".join(f"{e.field}: {e.message}" for e in errors), errors)


class InvalidInput(DomainError):
    """A request, query parameter or header that breaks the contract."""


class InvalidSchedule(InvalidInput):
    """A schedule that does not parse or cannot be computed (the field says which part)."""


class Unauthenticated(DomainError):
    """No credentials (`invalid_token` False) or credentials we do not accept (True)."""

    def __init__(self, detail: str = "", *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token


class Forbidden(DomainError):
    """Authenticated, but not allowed to do this."""


class NotFound(DomainError):
    """Absent, or belonging to another agent (the two are indistinguishable on purpose)."""


class TaskNotFound(NotFound):
    pass


class RunNotFound(NotFound):
    pass


class AgentNotFound(NotFound):
    pass


class StateConflict(DomainError):
    """The task's state forbids the change (canceled, not snoozable, changed concurrently, an
    Idempotency-Key reused or still in flight)."""


class VersionMismatch(DomainError):
    """An If-Match that does not name the current version."""


class TooLarge(DomainError):
    """A body, payload, input or event over its size limit."""


class QuotaExceeded(DomainError):
    """A per-agent ceiling (tasks stored)."""


class RateLimited(QuotaExceeded):
    """A per-agent request rate; `retry_after` seconds until a request would pass."""

    def __init__(self, detail: str = "", *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StepFailed(Exception):
    """A step failed in a way we have classified. `emit` implementations may raise it to
    choose the error type and whether a retry could help."""

    def __init__(self, type_: str, message: str, retryable: bool, output: Any = None) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.retryable = retryable
        self.output = output
