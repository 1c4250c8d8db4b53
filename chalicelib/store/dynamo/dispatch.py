"""DynamoDB adapter of the dispatch ports: the `due` table, shard leases and watermarks (items
in `keys`), and the task-side verbs on the tasks table's sparse `due` index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError

from chalicelib.domain.records import Schedule, TaskStatus
from chalicelib.domain.timefmt import from_epoch
from chalicelib.store.models import DueModel, KeyModel, TaskModel
from chalicelib.store.ports import Acquired, DueEntry, DueFire, HeldElsewhere, slot_of

ENTRY_TTL = timedelta(days=14)  # as long as SQS keeps a message; the tick works entries long before
LEASE_TTL = timedelta(days=1)


def _conflict(e: PutError | UpdateError | DeleteError) -> bool:
    return e.cause_response_code == "ConditionalCheckFailedException"


class DynamoDue:
    def add(self, entry: DueEntry) -> bool:
        item = DueModel(
            entry.shard,
            entry.slot,
            task_id=entry.task_id,
            fire=entry.fire,
            schedule_version=entry.schedule_version,
            expires_at=from_epoch(entry.fire) + ENTRY_TTL,
        )
        try:
            item.save(condition=DueModel.slot.does_not_exist() | (DueModel.schedule_version <= entry.schedule_version))
        except PutError as e:
            if _conflict(e):
                return False
            raise
        return True

    def read(self, shard: str, until: int, after: str | None = None) -> Iterator[DueEntry]:
        upper = slot_of(until, "~")  # after every task id at that second
        if after is not None and after >= upper:
            return
        cond = DueModel.slot <= upper if after is None else DueModel.slot.between(after, upper)
        # Consistent: a tick overlapping one whose lease ran out must see the entries it just wrote.
        for item in DueModel.query(shard, cond, consistent_read=True):
            if item.slot == after:
                continue  # between() includes its lower bound
            yield DueEntry(item.shard, item.task_id, int(item.fire), int(item.schedule_version))


def _shard_key(shard: str) -> str:
    return f"tick#shard#{shard}"


def _through_key(shard: str) -> str:
    return f"tick#through#{shard}"


class DynamoShardLeases:
    def acquire_shard(self, shard: str, holder: str, now: int, seconds: int) -> Acquired | HeldElsewhere:
        until = now + seconds
        lease = KeyModel(_shard_key(shard), holder=holder, until=until, expires_at=from_epoch(now) + LEASE_TTL)
        try:
            # Its own holder included: a write that landed and whose answer was lost is resent by
            # the SDK and must find the lease ours, not another tick's (the shard would sit idle).
            lease.save(condition=KeyModel.key.does_not_exist() | (KeyModel.until < now) | (KeyModel.holder == holder))
        except PutError as e:
            if _conflict(e):
                return HeldElsewhere()
            raise
        return Acquired(until)

    def release_shard(self, shard: str, holder: str) -> None:
        try:
            KeyModel(_shard_key(shard)).delete(condition=KeyModel.holder == holder)
        except DeleteError as e:
            if not _conflict(e):
                raise

    def watermark(self, shard: str) -> str | None:
        try:
            return KeyModel.get(_through_key(shard), consistent_read=True).through
        except KeyModel.DoesNotExist:
            return None

    def advance_watermark(self, shard: str, through: str) -> bool:
        # No TTL: losing it would make the tick re-read old entries.
        try:
            KeyModel(_through_key(shard), through=through).save(
                condition=KeyModel.key.does_not_exist() | (KeyModel.through < through)
            )
        except PutError as e:
            if _conflict(e):
                return False
            raise
        return True


class DynamoDueTasks:
    def due_tasks(self, shard: str, until: int) -> Iterator[DueFire]:
        for item in TaskModel.due_index.query(shard, TaskModel.due_at <= until):
            yield DueFire(
                item.task_id,
                item.created_by,
                Schedule.from_fields(item.sched or {}),
                int(item.schedule_version or 1),
                int(item.priority or 5),
                int(item.due_at or 0),
            )

    def advance_due(self, task_id: str, due_at: int, schedule_version: int, *, complete: bool = False) -> bool:
        actions: list[Any] = [TaskModel.due_at.remove(), TaskModel.due_shard.remove()]
        if complete:
            actions.append(TaskModel.status.set(TaskStatus.COMPLETED.value))
        cond = (TaskModel.due_at == due_at) & (TaskModel.schedule_version == schedule_version)
        return _update(task_id, actions, cond)

    def pause_with_error(self, task_id: str, schedule_version: int, error: str) -> bool:
        actions = [
            TaskModel.status.set(TaskStatus.PAUSED.value),
            TaskModel.schedule_error.set(error),
            TaskModel.due_at.remove(),
            TaskModel.due_shard.remove(),
        ]
        return _update(task_id, actions, _active_at(schedule_version))

    def complete(self, task_id: str, schedule_version: int) -> bool:
        actions = [
            TaskModel.status.set(TaskStatus.COMPLETED.value),
            TaskModel.due_at.remove(),
            TaskModel.due_shard.remove(),
        ]
        return _update(task_id, actions, _active_at(schedule_version))


def _active_at(schedule_version: int) -> Any:
    return (TaskModel.schedule_version == schedule_version) & (TaskModel.status == TaskStatus.ACTIVE.value)


def _update(task_id: str, actions: list[Any], cond: Any) -> bool:
    try:
        TaskModel(task_id).update(actions=actions, condition=cond)
    except UpdateError as e:
        if _conflict(e):
            return False
        raise
    return True
