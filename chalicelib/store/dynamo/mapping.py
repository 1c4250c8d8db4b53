"""Records ↔ PynamoDB items. Only the DynamoDB adapter sees items."""

from __future__ import annotations

from chalicelib.domain.records import Definition, Schedule, Task, TaskStatus
from chalicelib.store.models import TaskModel


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
