"""Records ↔ PynamoDB items. Only the DynamoDB adapter sees items."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.budgets import FIELDS as BUDGET_FIELDS
from chalicelib.domain.records import Agent, AgentStatus, Definition, Event, Schedule, Task, TaskStatus
from chalicelib.store.models import AgentModel, EventModel, TaskModel


def task_from_item(item: TaskModel) -> Task:
    return Task(
        task_id=item.task_id,
        created_by=item.created_by,
        created_at=item.created_at,
        updated_at=item.updated_at,
        status=TaskStatus(item.status),
        schedule=Schedule.from_fields(item.sched or {}),
        definition=Definition.from_fields(item.spec or {}),
        version=int(item.version or 1),
        schedule_version=int(item.schedule_version or 1),
        due_shard=item.due_shard,
        due_at=None if item.due_at is None else int(item.due_at),
        snoozed_until=item.snoozed_until,
        snooze_reason=item.snooze_reason,
        schedule_error=item.schedule_error,
    )


def task_attributes(task: Task) -> dict[str, Any]:
    """Every attribute of a task's item but its keys and `created_sk` (None: absent)."""
    return {
        "created_by": task.created_by,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "status": str(task.status),
        "schedule_kind": str(task.schedule.kind),
        "priority": task.definition.priority,
        "spec": task.definition.fields(),
        "sched": task.schedule.fields(),
        "version": task.version,
        "schedule_version": task.schedule_version,
        "due_shard": task.due_shard,
        "due_at": task.due_at,
        "event_key": task.event_key,
        "snoozed_until": task.snoozed_until,
        "snooze_reason": task.snooze_reason,
        "schedule_error": task.schedule_error,
    }


def task_to_item(task: Task, created_sk: str) -> TaskModel:
    """`created_sk` orders an agent's tasks newest first (the adapter makes it on create)."""
    attrs = {k: v for k, v in task_attributes(task).items() if v is not None}
    return TaskModel(task.task_id, created_sk=created_sk, **attrs)


def agent_from_item(item: AgentModel) -> Agent:
    return Agent(
        agent_id=item.agent_id,
        name=item.name,
        created_at=item.created_at,
        status=AgentStatus(item.status),
        token_hash=item.token_hash,
        signing_secret=item.signing_secret,
        task_count=int(item.task_count or 0),
        egress_aws_targets=None if item.egress_aws_targets is None else tuple(map(str, item.egress_aws_targets)),
        egress_http_allow=None if item.egress_http_allow is None else tuple(map(str, item.egress_http_allow)),
        **{name: _int_or_none(getattr(item, name)) for name in BUDGET_FIELDS},
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def agent_to_item(agent: Agent) -> AgentModel:
    item = AgentModel(
        agent.agent_id,
        name=agent.name,
        created_at=agent.created_at,
        status=str(agent.status),
        token_hash=agent.token_hash,
        signing_secret=agent.signing_secret,
        task_count=agent.task_count,
    )
    # pynamodb types a list of strings as list[UnicodeAttribute]
    aws: Any = None if agent.egress_aws_targets is None else list(agent.egress_aws_targets)
    http: Any = None if agent.egress_http_allow is None else list(agent.egress_http_allow)
    item.egress_aws_targets, item.egress_http_allow = aws, http
    for name in BUDGET_FIELDS:
        setattr(item, name, getattr(agent, name))
    return item


def event_from_item(item: EventModel) -> Event:
    doc = dict(item.doc or {})
    return Event(
        agent_id=item.agent_id,
        event_id=item.event_id,
        name=doc.get("name") or "",
        data=doc.get("data"),
        time=doc.get("time") or "",
        runs=tuple(doc.get("runs") or ()),
        depth=int(doc.get("depth") or 0),
        expires_at=item.expires_at,
    )


def event_to_item(event: Event) -> EventModel:
    doc = {
        "id": event.event_id,
        "name": event.name,
        "data": event.data,
        "time": event.time,
        "runs": [dict(r) for r in event.runs],
        "depth": event.depth,
    }
    return EventModel(event.agent_id, event.event_id, doc=doc, expires_at=event.expires_at)
