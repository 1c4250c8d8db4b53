"""The DynamoDB adapter of the task store (the `tasks` table and its indexes)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.condition import Condition

from chalicelib.domain.records import AgentStatus, Task, TaskStatus
from chalicelib.store.dynamo.mapping import task_attributes, task_from_item, task_to_item
from chalicelib.store.models import AgentModel, TaskModel
from chalicelib.store.ports import TaskPage


def conditional_failed(e: PutError | UpdateError) -> bool:
    return e.cause_response_code == "ConditionalCheckFailedException"


def unchanged_since(read: Task) -> Condition:
    """Holds only if the item is still as `read` in every attribute that others write (agents:
    version; ticks: due_at; workers: status), so a full-item write never undoes a concurrent one."""
    cond = (TaskModel.version == read.version) & (TaskModel.status == str(read.status))
    cond &= TaskModel.schedule_version == read.schedule_version
    cond &= TaskModel.due_at.does_not_exist() if read.due_at is None else (TaskModel.due_at == read.due_at)
    return cond


class DynamoTasks:
    def get(self, task_id: str, *, consistent: bool = True) -> Task | None:
        try:
            return task_from_item(TaskModel.get(task_id, consistent_read=consistent))
        except DoesNotExist:
            return None

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Task]:
        ids = sorted(set(task_ids))
        return {i.task_id: task_from_item(i) for i in TaskModel.batch_get(ids)} if ids else {}

    def create(self, task: Task, *, quota: int) -> bool:
        # Two conditional writes rather than one transaction: moto's in-process and server modes
        # copy whole tables inside TransactWriteItems, which races under parallel requests. A crash
        # between them leaves at worst a quota count one too high, never a task beyond the quota.
        try:
            AgentModel(task.created_by).update(
                actions=[AgentModel.task_count.add(1)],
                condition=(AgentModel.status == str(AgentStatus.ACTIVE)) & (AgentModel.task_count < quota),
            )
        except UpdateError as e:
            if conditional_failed(e):
                return False
            raise
        # Ties within one second are broken by the real clock's nanoseconds: newest first stays exact.
        created_sk = f"{task.created_at}#{time.time_ns():020d}#{task.task_id}"
        try:
            task_to_item(task, created_sk).save(condition=TaskModel.task_id.does_not_exist())
        except PutError as e:
            # A write that landed and whose answer was lost: the SDK resent it and the resend met
            # the task it wrote (its id is this request's own). Taken for a failure, the task stayed,
            # unknown to its agent, and the agent's retry made a second one (found by the soak).
            if conditional_failed(e) and self.get(task.task_id) == task:
                return True
            AgentModel(task.created_by).update(actions=[AgentModel.task_count.add(-1)])
            raise
        return True

    def save_if_unchanged(self, read: Task, new: Task) -> Task | None:
        saved = new.evolve(version=read.version + 1)
        actions: list[Any] = []
        for name, value in task_attributes(saved).items():
            attr = getattr(TaskModel, name)
            actions.append(attr.remove() if value is None else attr.set(value))
        try:
            TaskModel(read.task_id).update(actions=actions, condition=unchanged_since(read))
        except UpdateError as e:
            if conditional_failed(e):
                return None
            raise
        return saved

    def list_by_agent(
        self,
        agent_id: str | None,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        cond = None
        if status is not None:
            cond = TaskModel.status == str(status)
        if kind is not None:
            c = TaskModel.schedule_kind == kind
            cond = c if cond is None else cond & c
        want = offset + limit + 1
        keys: list[str] = []
        if agent_id is not None:
            for item in TaskModel.agent_index.query(agent_id, filter_condition=cond, scan_index_forward=False):
                keys.append(item.task_id)
                if len(keys) >= want:
                    break
        else:  # every agent's tasks: a scan of the narrow index, sorted here
            rows = [(i.created_sk, i.task_id) for i in TaskModel.agent_index.scan(filter_condition=cond)]
            keys = [tid for _, tid in sorted(rows, reverse=True)[:want]]
        page_keys = keys[offset : offset + limit]
        by_id = self.get_many(page_keys)
        return TaskPage([by_id[k] for k in page_keys if k in by_id], len(keys) > offset + limit)

    def by_event_key(self, event_keys: Sequence[str]) -> list[Task]:
        ids = {t.task_id for key in event_keys for t in TaskModel.event_index.query(key)}
        items = list(TaskModel.batch_get(sorted(ids))) if ids else []  # PynamoDB batches by 100
        return [task_from_item(i) for i in sorted(items, key=lambda i: i.created_sk)]
