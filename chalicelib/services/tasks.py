"""Tasks: create, read, list, update. Every read and write is scoped to the caller."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import dispatch
from chalicelib.domain import schedules
from chalicelib.domain.contracts import SCHEDULE_FIELDS, TaskCreate, TaskUpdate, parse_timestamp
from chalicelib.domain.errors import (
    FieldError,
    Forbidden,
    InvalidInput,
    QuotaExceeded,
    StateConflict,
    TaskNotFound,
    TooLarge,
    VersionMismatch,
)
from chalicelib.domain.timefmt import iso, iso_epoch
from chalicelib.domain.validation import parse, query_int, stored_size, unknown_query
from chalicelib.platform.config import settings
from chalicelib.services.agents import Caller
from chalicelib.store import counters as counters_mod
from chalicelib.store.counters import Counters
from chalicelib.store.models import AgentModel, KeyModel, TaskModel

IDEMPOTENCY_TTL = 24 * 3600
SPEC_FIELDS = tuple(f for f in TaskCreate.model_fields if f not in SCHEDULE_FIELDS and f != "created_by")


# ---- representation ------------------------------------------------------------------------


def represent(t: TaskModel, now: datetime, counters: Counters) -> dict[str, Any]:
    """The task as the API shows it, with its run counters (`counters.read`)."""
    spec, sched = t.spec or {}, t.sched or {}
    nxt = dispatch.pending_fire(t, now)
    snoozed = t.snoozed_until if t.snoozed_until and t.snoozed_until > (iso(now) or "") else None
    body: dict[str, Any] = {"id": t.task_id, "created_by": t.created_by}
    body.update({k: spec.get(k) for k in SPEC_FIELDS})
    body.update({k: sched.get(k) for k in SCHEDULE_FIELDS})
    body.update(
        status=t.status,
        next_run_at=iso_epoch(nxt),
        **counters.as_dict(),
        snoozed_until=snoozed,
        snooze_reason=t.snooze_reason if snoozed else None,
        schedule_error=t.schedule_error,
        created_at=t.created_at,
        updated_at=t.updated_at,
        version=int(t.version or 0),
    )
    return body


# ---- validation ----------------------------------------------------------------------------


def _validated(data: dict[str, Any], caller: Caller) -> TaskCreate:
    spec = parse(TaskCreate, data)
    errors: list[FieldError] = []
    if spec.schedule_kind != "event" and not spec.schedule_expr:
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


def _require_agent(agent_id: str) -> AgentModel:
    try:
        agent = AgentModel.get(agent_id, consistent_read=True)
    except DoesNotExist:
        raise InvalidInput.field("created_by", f"no agent {agent_id}") from None
    if agent.status != "active":
        raise InvalidInput.field("created_by", f"agent {agent_id} is revoked")
    return agent


def _split(spec: TaskCreate, anchor: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    data = spec.model_dump(mode="json")
    data["payload"] = spec.payload.model_dump(mode="json", exclude_unset=True)
    sched = {k: data[k] for k in SCHEDULE_FIELDS}
    sched["anchor"] = iso(anchor)
    return {k: data[k] for k in SPEC_FIELDS}, sched


def _event_key(agent_id: str, sched: dict[str, Any]) -> str | None:
    if sched["schedule_kind"] == "event" and sched.get("schedule_expr"):
        return f"{agent_id}#{sched['schedule_expr']}"
    return None


# ---- create --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """What `create_task` did: a new task (and the key its first response is to be kept under),
    or, for a replayed Idempotency-Key, the first response itself."""

    task: TaskModel | None
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
    spec_doc, sched = _split(spec, now)
    schedule = dispatch.build_schedule(sched, task_id, now, check_past=True)
    fire = dispatch.first_fire(schedule, now)

    task = TaskModel(
        task_id,
        created_by=agent_id,
        created_at=iso(now),
        # Ties within one second are broken by the real clock's nanoseconds: newest first stays exact.
        created_sk=f"{iso(now)}#{time.time_ns():020d}#{task_id}",
        updated_at=iso(now),
        status="active",
        schedule_kind=sched["schedule_kind"],
        priority=spec.priority,
        spec=spec_doc,
        sched=sched,
        schedule_version=1,
        version=1,
        event_key=_event_key(agent_id, sched),
    )
    dispatch.schedule_next(task, fire)  # completed at once if every occurrence lies outside starts_at/ends_at
    # Three conditional writes rather than one transaction: moto's in-process and server modes
    # copy whole tables inside TransactWriteItems, which races under parallel requests. A crash
    # between them leaves at worst a quota count one too high, or an idempotency key without
    # its task (a retry then gets 409 until the key expires), never a partial task.
    if idem_key:
        claim = KeyModel(
            idem_key,
            value={"task_id": task_id, "body_hash": body_hash},
            expires_at=now + timedelta(seconds=IDEMPOTENCY_TTL),
        )
        try:
            claim.save(condition=KeyModel.key.does_not_exist() | (KeyModel.expires_at < now))
        except PutError as e:
            if e.cause_response_code != "ConditionalCheckFailedException":
                raise
            replay = _idempotent_replay(idem_key, body_hash, now)
            if replay is None:
                raise StateConflict("a request with this Idempotency-Key is still in progress; retry shortly") from None
            return replay
    try:
        AgentModel(agent_id).update(
            actions=[AgentModel.task_count.add(1)],
            condition=(AgentModel.status == "active") & (AgentModel.task_count < settings().max_tasks_per_agent),
        )
    except UpdateError as e:
        if idem_key:
            KeyModel(idem_key).delete()
        if e.cause_response_code == "ConditionalCheckFailedException":
            raise QuotaExceeded(
                f"agent {agent_id} has reached its quota of {settings().max_tasks_per_agent} tasks"
            ) from None
        raise
    task.save(condition=TaskModel.task_id.does_not_exist())
    dispatch.dispatch_if_soon(task, now)  # a first fire before the next tick's look-ahead goes out now
    return Created(task, idem_key)


def remember_response(key: str, status: int, body: str, headers: dict[str, str]) -> None:
    """Keep the first response to an Idempotency-Key, so a replay answers exactly it (status,
    body, ETag and Location), whatever the task has become since."""
    KeyModel(key).update(
        actions=[KeyModel.response.set({"status": status, "body": body, "headers": headers})],
        condition=KeyModel.key.exists(),
    )


def _idempotent_replay(key: str, body_hash: str, now: datetime) -> Created | None:
    try:
        rec = KeyModel.get(key, consistent_read=True)
    except DoesNotExist:
        return None
    if rec.expires_at is not None and rec.expires_at.timestamp() < now.timestamp():
        return None  # moto never expires TTL items; DynamoDB may lag up to days
    value = rec.value or {}
    if value.get("body_hash") != body_hash:
        raise StateConflict("this Idempotency-Key was already used with a different request body")
    if isinstance(rec.response, dict):
        return Created(None, key, rec.response)
    try:  # created, but the first response was never kept (a crash just after the task's write)
        return Created(TaskModel.get(value["task_id"], consistent_read=True), key)
    except DoesNotExist:
        return None


# ---- read ----------------------------------------------------------------------------------


def load(caller: Caller, task_id: str) -> TaskModel:
    """The caller's task, or 404 — also for another agent's task, so foreign ids stay invisible."""
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise TaskNotFound(f"task {task_id} not found") from None
    try:
        task = TaskModel.get(task_id, consistent_read=True)
    except DoesNotExist:
        raise TaskNotFound(f"task {task_id} not found") from None
    if not caller.is_admin and task.created_by != caller.agent_id:
        raise TaskNotFound(f"task {task_id} not found")
    return task


LIST_QUERY = {"status", "created_by", "schedule_kind", "limit", "offset"}


def list_tasks(caller: Caller, query: dict[str, str], now: datetime) -> dict[str, Any]:
    errors = unknown_query(query, LIST_QUERY)
    limit = query_int(query, "limit", 50, 1, 200, errors)
    offset = query_int(query, "offset", 0, 0, None, errors)
    status, kind, created_by = query.get("status"), query.get("schedule_kind"), query.get("created_by")
    if status is not None and status not in ("active", "paused", "canceled", "completed"):
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

    cond = None
    if status is not None:
        cond = TaskModel.status == status
    if kind is not None:
        c = TaskModel.schedule_kind == kind
        cond = c if cond is None else cond & c
    want = offset + limit + 1
    keys: list[str] = []
    if created_by is not None:
        for item in TaskModel.agent_index.query(created_by, filter_condition=cond, scan_index_forward=False):
            keys.append(item.task_id)
            if len(keys) >= want:
                break
    else:  # the admin listing every agent's tasks: a scan of the narrow index, sorted here
        rows = [(i.created_sk, i.task_id) for i in TaskModel.agent_index.scan(filter_condition=cond)]
        keys = [tid for _, tid in sorted(rows, reverse=True)[:want]]
    page_keys = keys[offset : offset + limit]
    by_id = {t.task_id: t for t in TaskModel.batch_get(page_keys)} if page_keys else {}
    page = [by_id[k] for k in page_keys if k in by_id]
    stats = counters_mod.read_many(t.task_id for t in page)  # one BatchGetItem per 100 tasks
    tasks = [represent(t, now, stats[t.task_id]) for t in page]
    return {
        "tasks": tasks,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(keys) > offset + limit else None,
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


def update_task(caller: Caller, task_id: str, data: Any, if_match: str | None, now: datetime) -> TaskModel:
    expected = parse_if_match(if_match)
    if not isinstance(data, dict):
        raise InvalidInput.field("body", "must be a JSON object")
    patch = parse(TaskUpdate, data)
    given = {k: data[k] for k in patch.model_fields_set}
    for _ in range(8):  # optimistic concurrency: re-read and re-merge on a lost race
        task = load(caller, task_id)
        read = copy.deepcopy(task)
        if task.status == "canceled":
            raise StateConflict(f"task {task_id} is canceled; it can no longer change")
        if expected is not None and expected != task.version:
            raise VersionMismatch(f"If-Match {expected} does not match the task's version {task.version}")
        if "created_by" in given and given["created_by"] != task.created_by:
            raise InvalidInput.field("created_by", "cannot change")
        current = {
            **(task.spec or {}),
            **{k: (task.sched or {}).get(k) for k in SCHEDULE_FIELDS},
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
        spec_doc, sched = _split(spec, now)
        if not schedule_changed:
            sched["anchor"] = (task.sched or {}).get("anchor", sched["anchor"])
        task.spec = spec_doc
        task.sched = sched
        task.priority = spec.priority
        task.schedule_kind = spec.schedule_kind
        task.event_key = _event_key(task.created_by, sched)
        task.updated_at = iso(now)
        if schedule_changed:
            schedule = dispatch.build_schedule(sched, task_id, now, check_past=True)
            fire = dispatch.first_fire(schedule, now)
            task.schedule_version = int(task.schedule_version or 1) + 1
            task.snoozed_until = task.snooze_reason = None
            if task.status == "completed" and fire is not None:
                task.status = "active"
            if task.status == "active":
                dispatch.schedule_next(task, fire)
            else:
                task.due_shard = task.due_at = None
        try:
            task.save_versioned(read)
        except PutError as e:
            if e.cause_response_code == "ConditionalCheckFailedException":
                continue  # re-read: a changed version becomes a 412 above, anything else re-merges
            raise
        if schedule_changed:
            dispatch.fence_change(read, task, now)
            dispatch.dispatch_if_soon(task, now)
        return task
    raise StateConflict("the task is being changed concurrently; retry")
