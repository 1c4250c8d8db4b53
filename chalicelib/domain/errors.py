"""The error hierarchy. Each error knows its HTTP status; `api.py` maps them to
RFC 9457 problem+json in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(
        self, detail: str = "", errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.headers = headers or {}

    def problem(self) -> dict[str, object]:
        body: dict[str, object] = {
            "type": f"https://tasks-api.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class BadRequest(ApiError):
    status, title, slug = 400, "Invalid request", "invalid-request"

    @classmethod
    def field(cls, field: str, message: str) -> BadRequest:
        return cls(f"{field}: {message}", [FieldError(field, message)])


class Unauthorized(ApiError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(ApiError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ApiError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(ApiError):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(ApiError):
    status, title, slug = 412, "Precondition Failed", "precondition-failed"


class PayloadTooLarge(ApiError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"

    @classmethod
    def field(cls, field: str, message: str) -> PayloadTooLarge:
        return cls(f"{field}: {message}", [FieldError(field, message)])


class TooManyRequests(ApiError):
    status, title, slug = 429, "Too Many Requests", "quota-exceeded"


class RateLimited(TooManyRequests):
    slug = "rate-limited"
