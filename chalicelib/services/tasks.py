from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib import dispatch
from chalicelib.dispatch import budgets
from chalicelib.domain import budgets as budget_rules
from chalicelib.domain import schedules
from chalicelib.domain.contracts import SCHEDULE_FIELDS, TaskCreate, TaskUpdate, parse_timestamp
from chalicelib.domain.errors import (
    FieldError,
    Forbidden,
    InvalidInput,
    InvalidSchedule,
    QuotaExceeded,
    StateConflict,
    TaskNotFound,
    TooLarge,
    VersionMismatch,
)
from chalicelib.domain.records import AgentStatus, Definition, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.domain.timefmt import iso, iso_epoch
from chalicelib.domain.validation import parse, query_int, stored_size, unknown_query
from chalicelib.platform.config import settings
from chalicelib.services.agents import Caller
from chalicelib.store import counters as counters_mod
from chalicelib.store import stores
from chalicelib.store.counters import Counters

IDEMPOTENCY_TTL = 24 * 3600
SPEC_FIELDS = tuple(f for f in TaskCreate.model_fields if f not in SCHEDULE_FIELDS and f != "created_by")


# ---- representation ------------------------------------------------------------------------


def represent(t: Task, now: datetime, counters: Counters) -> dict[str, Any]:
    """The task as the API shows it, with its run counters (`counters.read`)."""
    spec, sched = t.definition.fields(), t.schedule.fields()
    nxt = dispatch.pending_fire(t, now)
    snoozed = t.snoozed_until if t.snoozed_until and t.snoozed_until > (iso(now) or "") else None
    body: dict[str, Any] = {"id": t.task_id, "created_by": t.created_by}
    body.update({k: spec.get(k) for k in SPEC_FIELDS})
    body.update({k: sched.get(k) for k in SCHEDULE_FIELDS})
    body.update(
        status=str(t.status),
        next_run_at=iso_epoch(nxt),
        **counters.as_dict(),
        snoozed_until=snoozed,
        snooze_reason=t.snooze_reason if snoozed else None,
        schedule_error=t.schedule_error,
        created_at=t.created_at,
        updated_at=t.updated_at,
        version=t.version,
    )
    return body


# ---- validation ----------------------------------------------------------------------------


def _validated(data: dict[str, Any], caller: Caller) -> TaskCreate:
    spec = parse(TaskCreate, data)
    errors: list[FieldError] = []
    if spec.schedule_kind != ScheduleKind.EVENT and not spec.schedule_expr:
        errors.append(FieldError("schedule_expr", f"is required for schedule_kind {spec.schedule_kind!r}"))
    if spec.dedupe_window_seconds is not None and spec.dedupe_key is None:
        errors.append(FieldError("dedupe_window_seconds", "is only allowed with dedupe_key"))
    if spec.concurrency_limit is not None and spec.concurrency_key is None:
        errors.append(FieldError("concurrency_limit", "is only allowed with concurrency_key"))
    for name in ("starts_at", "ends_at"):
        value = getattr(spec, name)
        if value is not None:
            try:
                parse_timestamp(value, name)
            except InvalidInput as e:
                errors.extend(e.errors)
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    size = stored_size(spec.payload.model_dump(mode="json", exclude_unset=True))
    if size > settings().max_payload_bytes:
        raise TooLarge.field(
            "payload", f"is {size} bytes stored (escaped); the limit is {settings().max_payload_bytes}"
        )
    if caller.is_admin:
        _require_agent(spec.created_by)
    elif spec.created_by != caller.agent_id:
        raise Forbidden(
            "created_by must be the calling agent's id", [FieldError("created_by", "must be the caller's agent_id")]
        )
    if spec.dedupe_key is not None and spec.dedupe_window_seconds is None:
        spec.dedupe_window_seconds = 3600
    if spec.concurrency_key is not None and spec.concurrency_limit is None:
        spec.concurrency_limit = 1
    return spec


def _check_interval(schedule: schedules.Schedule, agent_id: str, now: datetime) -> None:
    """A schedule may fire at most every `min_interval_seconds` of its agent's budget (the
    operator's default, or the admin's value for the agent, which wins): a 400 otherwise."""
    if schedule.kind in ("once", "event"):
        return
    least = budgets.limits_of(stores().agents.get(agent_id)).min_interval_seconds
    try:
        close = budget_rules.too_close(schedule, now, least)
    except schedules.ScheduleError as e:
        raise InvalidSchedule.field(e.field, e.message) from None
    if close is not None:
        a, b = close
        raise InvalidSchedule.field(
            "schedule_expr",
            f"fires at {iso(a)} and {iso(b)}, {int((b - a).total_seconds())} s apart; "
            f"this agent's schedules may fire at most every {least} s (min_interval_seconds)",
        )


def _require_agent(agent_id: str) -> None:
    agent = stores().agents.get(agent_id)
    if agent is None:
        raise InvalidInput.field("created_by", f"no agent {agent_id}")
    if agent.status is not AgentStatus.ACTIVE:
        raise InvalidInput.field("created_by", f"agent {agent_id} is revoked")


def _records(spec: TaskCreate, anchor: str | None) -> tuple[Definition, Schedule]:
    """The validated fields as a definition and a schedule that took effect at `anchor`."""
    data = spec.model_dump(mode="json")
    data["payload"] = spec.payload.model_dump(mode="json", exclude_unset=True)
    return Definition.from_fields(data), Schedule.from_fields({**data, "anchor": anchor})


# ---- create --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """What `create_task` did: a new task (and the key its first response is to be kept under),
    or, for a replayed Idempotency-Key, the first response itself."""

    task: Task | None
    idempotency_key: str | None = None
    replay: dict[str, Any] | None = None  # {"status", "body" (the exact text), "headers"}


def create_task(caller: Caller, data: Any, idempotency_key: str | None, now: datetime) -> Created:
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= 255):
        raise InvalidInput.field("Idempotency-Key", "must be 1–255 characters")
    if not isinstance(data, dict):
        raise InvalidInput.field("body", "must be a JSON object")
    spec = _validated(data, caller)
    agent_id = spec.created_by
    idem_key = f"idem#{agent_id}#{idempotency_key}" if idempotency_key else None
    body_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    if idem_key:  # before the schedule checks: a `once` time may have passed since the first try
        replay = _idempotent_replay(idem_key, body_hash, now)
        if replay is not None:
            return replay
    task_id = str(uuid.uuid4())
    definition, schedule = _records(spec, iso(now))
    built = dispatch.build_schedule(schedule, task_id, now, check_past=True)
    fire = dispatch.first_fire(built, now)
    _check_interval(built, agent_id, now)
    task = Task(
        task_id=task_id,
        created_by=agent_id,
        created_at=iso(now),
        updated_at=iso(now),
        status=TaskStatus.ACTIVE,
        schedule=schedule,
        definition=definition,
    )
    task = dispatch.schedule_next(task, fire)  # completed at once if every occurrence lies outside starts_at/ends_at
    # The key is claimed before the task is written, and given up if the task is not: a crash
    # between the two leaves a key without its task (a retry then gets 409 until it expires),
    # never a second task for one key.
    s = stores()
    if idem_key:
        claim = {"task_id": task_id, "body_hash": body_hash}
        claimed = s.keys.claim(idem_key, claim, expires_at=now + timedelta(seconds=IDEMPOTENCY_TTL), now=now)
        if not claimed and not _ours(idem_key, claim, now):
            replay = _idempotent_replay(idem_key, body_hash, now)
            if replay is None:
                raise StateConflict("a request with this Idempotency-Key is still in progress; retry shortly")
            return replay
    try:
        created = s.tasks.create(task, quota=settings().max_tasks_per_agent)
    except Exception:
        if idem_key:
            s.keys.release(idem_key)
        raise
    if not created:
        if idem_key:
            s.keys.release(idem_key)
        raise QuotaExceeded(f"agent {agent_id} has reached its quota of {settings().max_tasks_per_agent} tasks")
    return Created(_dispatched(task, now), idem_key)


def _ours(key: str, claim: dict[str, Any], now: datetime) -> bool:
    """A claim whose write landed and whose answer was lost (the SDK resent it, the resend failed
    its condition) holds this request's own claim: its task id is this request's. Taken for
    another request's, the key answered 409 "in progress" to every retry until it expired."""
    held = stores().keys.get(key, now=now)
    return held is not None and held.value == claim


def _dispatched(task: Task, now: datetime) -> Task:
    """Dispatch-on-write: a first fire before the next tick's look-ahead goes out now. The task
    as it then stands (a dispatched start leaves the due index; a finished `once` completes)."""
    if dispatch.dispatch_if_soon(task, now):
        return stores().tasks.get(task.task_id) or task
    return task


def remember_response(key: str, status: int, body: str, headers: dict[str, str]) -> None:
    """Keep the first response to an Idempotency-Key, so a replay answers exactly it (status,
    body, ETag and Location), whatever the task has become since."""
    stores().keys.keep_response(key, {"status": status, "body": body, "headers": headers})


def _idempotent_replay(key: str, body_hash: str, now: datetime) -> Created | None:
    claim = stores().keys.get(key, now=now)
    if claim is None:
        return None
    if claim.value.get("body_hash") != body_hash:
        raise StateConflict("this Idempotency-Key was already used with a different request body")
    if claim.response is not None:
        return Created(None, key, dict(claim.response))
    # Created, but the first response was never kept (a crash just after the task's write).
    task = stores().tasks.get(str(claim.value.get("task_id")))
    return None if task is None else Created(task, key)


# ---- read ----------------------------------------------------------------------------------


def load(caller: Caller, task_id: str) -> Task:
    """The caller's task, or 404 — also for another agent's task, so foreign ids stay invisible."""
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise TaskNotFound(f"task {task_id} not found") from None
    task = stores().tasks.get(task_id)
    if task is None or (not caller.is_admin and task.created_by != caller.agent_id):
        raise TaskNotFound(f"task {task_id} not found")
    return task


LIST_QUERY = {"status", "created_by", "schedule_kind", "limit", "offset"}


def list_tasks(caller: Caller, query: dict[str, str], now: datetime) -> dict[str, Any]:
    errors = unknown_query(query, LIST_QUERY)
    limit = query_int(query, "limit", 50, 1, 200, errors)
    offset = query_int(query, "offset", 0, 0, None, errors)
    status, kind, created_by = query.get("status"), query.get("schedule_kind"), query.get("created_by")
    if status is not None and status not in set(TaskStatus):
        errors.append(FieldError("status", "must be one of active, paused, canceled, completed"))
    if kind is not None and kind not in schedules.KINDS:
        errors.append(FieldError("schedule_kind", "must be one of cron, rrule, once, event"))
    if created_by is not None:
        try:
            created_by = str(uuid.UUID(created_by))
        except ValueError:
            errors.append(FieldError("created_by", "must be a UUID"))
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
    if not caller.is_admin:
        if created_by is not None and created_by != caller.agent_id:
            raise Forbidden(
                "an agent can only list its own tasks", [FieldError("created_by", "must be the caller's agent_id")]
            )
        created_by = caller.agent_id
    page = stores().tasks.list_by_agent(
        created_by,
        status=None if status is None else TaskStatus(status),
        kind=kind,
        offset=offset,
        limit=limit,
    )
    stats = counters_mod.read_many(t.task_id for t in page.tasks)  # one BatchGetItem per 100 tasks
    return {
        "tasks": [represent(t, now, stats[t.task_id]) for t in page.tasks],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if page.more else None,
    }


# ---- update --------------------------------------------------------------------------------


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if v == "*":  # any version (RFC 9110): the same as no precondition
        return None
    v = v.removeprefix("W/").strip('"')
    # ASCII digits only: str.isdigit() also accepts "²", and int() refuses over 4,300 digits.
    if not (v.isascii() and v.isdigit() and len(v) <= 18):
        raise InvalidInput.field("If-Match", 'must be the task\'s version, e.g. "3"')
    return int(v)


def update_task(caller: Caller, task_id: str, data: Any, if_match: str | None, now: datetime) -> Task:
    expected = parse_if_match(if_match)
    if not isinstance(data, dict):
        raise InvalidInput.field("body", "must be a JSON object")
    patch = parse(TaskUpdate, data)
    given = {k: data[k] for k in patch.model_fields_set}
    for _ in range(8):  # optimistic concurrency: re-read and re-merge on a lost race
        task = load(caller, task_id)
        if task.status is TaskStatus.CANCELED:
            raise StateConflict(f"task {task_id} is canceled; it can no longer change")
        if expected is not None and expected != task.version:
            raise VersionMismatch(f"If-Match {expected} does not match the task's version {task.version}")
        if "created_by" in given and given["created_by"] != task.created_by:
            raise InvalidInput.field("created_by", "cannot change")
        sched = task.schedule.fields()
        current = {
            **task.definition.fields(),
            **{k: sched.get(k) for k in SCHEDULE_FIELDS},
            "created_by": task.created_by,
        }
        merged = {**current, **given}
        if "dedupe_key" in given and given["dedupe_key"] is None and "dedupe_window_seconds" not in given:
            merged["dedupe_window_seconds"] = None
        if "concurrency_key" in given and given["concurrency_key"] is None and "concurrency_limit" not in given:
            merged["concurrency_limit"] = None
        merged = {k: v for k, v in merged.items() if v is not None}
        spec = _validated(merged, caller if not caller.is_admin else Caller(None, True))
        schedule_changed = any(k in given and given[k] != current.get(k) for k in SCHEDULE_FIELDS)
        # An unchanged schedule keeps the instant it took effect (interval rules count from it).
        anchor = iso(now) if schedule_changed or task.schedule.anchor is None else task.schedule.anchor
        definition, schedule = _records(spec, anchor)
        new = task.evolve(definition=definition, schedule=schedule, updated_at=iso(now))
        if schedule_changed:
            built = dispatch.build_schedule(schedule, task_id, now, check_past=True)
            fire = dispatch.first_fire(built, now)
            _check_interval(built, task.created_by, now)
            new = new.evolve(schedule_version=task.schedule_version + 1, snoozed_until=None, snooze_reason=None)
            if new.status is TaskStatus.COMPLETED and fire is not None:
                new = new.evolve(status=TaskStatus.ACTIVE)
            if new.status is TaskStatus.ACTIVE:
                new = dispatch.schedule_next(new, fire)
            else:
                new = new.evolve(due_shard=None, due_at=None)
        saved = stores().tasks.save_if_unchanged(task, new)
        if saved is None:
            continue  # re-read: a changed version becomes a 412 above, anything else re-merges
        if schedule_changed:
            dispatch.fence_change(task, saved, now)  # may complete the task: re-read below
            dispatch.dispatch_if_soon(saved, now)
            return stores().tasks.get(task_id) or saved
        return saved
    raise StateConflict("the task is being changed concurrently; retry")
