"""Schedule previews: the next N fire instants and a human-readable description."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib import dispatch
from chalicelib.domain import schedules
from chalicelib.domain.contracts import SchedulePreviewRequest, parse_timestamp
from chalicelib.domain.errors import FieldError, InvalidInput
from chalicelib.domain.records import ScheduleKind, Task
from chalicelib.domain.timefmt import iso
from chalicelib.domain.validation import parse

PREVIEW_QUERY = {"count", "after"}


def _count_after(count: Any, after: str | None, now: datetime) -> tuple[int, datetime]:
    errors: list[FieldError] = []
    n = 10
    try:
        n = int(count) if count is not None else 10
        if not 1 <= n <= 100:
            raise ValueError
    except (TypeError, ValueError):
        errors.append(FieldError("count", "must be an integer between 1 and 100"))
    at = now
    if after is not None:
        try:
            at = parse_timestamp(after, "after")
        except InvalidInput as e:
            errors.extend(e.errors)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    return n, at


def _result(schedule: schedules.Schedule, count: int, after: datetime) -> dict[str, Any]:
    try:  # bounded: each fire has a work budget (schedules.WORK_BUDGET); beyond it, a 400
        fires = schedules.preview(schedule, after, count)
    except schedules.ScheduleError as e:
        raise InvalidInput.field(e.field, e.message) from None
    return {"next_runs": [iso(t) for t in fires], "description": schedules.describe(schedule)}


def for_task(task: Task, query: dict[str, str], now: datetime) -> dict[str, Any]:
    unknown = sorted(set(query) - PREVIEW_QUERY)
    if unknown:
        raise InvalidInput("unknown query parameter", [FieldError(u, "unknown query parameter") for u in unknown])
    count, after = _count_after(query.get("count"), query.get("after"), now)
    return _result(dispatch.build_schedule(task.schedule, task.task_id, now), count, after)


def for_request(data: Any, now: datetime) -> dict[str, Any]:
    req = parse(SchedulePreviewRequest, data)
    if req.schedule_kind != ScheduleKind.EVENT and not req.schedule_expr:
        raise InvalidInput.field("schedule_expr", f"is required for schedule_kind {req.schedule_kind!r}")
    count, after = _count_after(req.count, req.after, now)
    sched = req.model_dump(
        include={"schedule_kind", "schedule_expr", "timezone", "jitter_seconds", "starts_at", "ends_at"}
    )
    sched["anchor"] = iso(now)
    # Jitter needs a task id for its stable offset; a preview without a task shows offset 0.
    schedule = dispatch.build_schedule(sched, "", now, check_past=True)
    return _result(schedule, count, after)
