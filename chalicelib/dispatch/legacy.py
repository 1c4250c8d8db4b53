"""A bridge while the services still hand dispatch PynamoDB task items: the one place dispatch
sees one. It turns an item into a Task record, and writes what dispatch decided back onto the
item, as the services expect. Once the services pass records, `chalicelib.dispatch` exports
the record-only functions of `plan.py` instead, and this module goes (issue 12)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias, overload

from chalicelib.dispatch import plan
from chalicelib.domain.records import Task

if TYPE_CHECKING:
    from chalicelib.store.models import TaskModel

TaskLike: TypeAlias = "Task | TaskModel"


def record(task: TaskLike) -> Task:
    if isinstance(task, Task):
        return task
    from chalicelib.store.dynamo.mapping import task_from_item

    return task_from_item(task)


@overload
def write_back(item: Task, task: Task) -> Task: ...
@overload
def write_back(item: TaskModel, task: Task) -> TaskModel: ...
def write_back(item: TaskLike, task: Task) -> TaskLike:
    """`task` as the caller holds it: the record itself, or the item with dispatch's fields set."""
    if isinstance(item, Task):
        return task
    item.status = task.status.value
    item.due_at, item.due_shard, item.schedule_error = task.due_at, task.due_shard, task.schedule_error
    return item


@overload
def schedule_next(task: Task, fire: datetime | None) -> Task: ...
@overload
def schedule_next(task: TaskModel, fire: datetime | None) -> TaskModel: ...
def schedule_next(task: TaskLike, fire: datetime | None) -> TaskLike:
    """plan.scheduled: an item is changed in place (and returned)."""
    return write_back(task, plan.scheduled(record(task), fire))


def pending_fire(task: TaskLike, now: datetime) -> int | None:
    return plan.pending_fire(record(task), now)


def possibly_sent(task: TaskLike, first: int, until: int, now: datetime) -> list[int]:
    return plan.possibly_sent(record(task), first, until, now)


def next_fire_from(task: TaskLike, now: datetime) -> datetime | None:
    return plan.next_fire_from(record(task), now)
