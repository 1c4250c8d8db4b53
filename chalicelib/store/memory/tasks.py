"""The in-memory task store: the DynamoDB adapter's guarantees under one lock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from chalicelib.domain.records import AgentStatus, Task, TaskStatus
from chalicelib.store.ports import TaskPage

if TYPE_CHECKING:
    from chalicelib.store.memory.services import MemoryAgents


class MemoryTasks:
    def __init__(self, lock: threading.RLock | None = None, agents: MemoryAgents | None = None) -> None:
        from chalicelib.store.memory.services import MemoryAgents

        self._lock = lock or threading.RLock()
        self._agents = agents if agents is not None else MemoryAgents(self._lock)
        self.items: dict[str, Task] = {}
        self._order: dict[str, int] = {}  # creation order: what `created_sk` is in DynamoDB
        self._seq = itertools.count()

    def get(self, task_id: str, *, consistent: bool = True) -> Task | None:
        with self._lock:
            return self.items.get(task_id)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Task]:
        with self._lock:
            return {i: self.items[i] for i in set(task_ids) if i in self.items}

    def put(self, task: Task) -> None:
        """Store a task as it is, counted against nothing (tests and the scale model seed this way)."""
        with self._lock:
            self.items[task.task_id] = task
            self._order.setdefault(task.task_id, next(self._seq))

    def create(self, task: Task, *, quota: int) -> bool:
        with self._lock:
            agent = self._agents.items.get(task.created_by)
            if agent is None or agent.status is not AgentStatus.ACTIVE or agent.task_count >= quota:
                return False
            if task.task_id in self.items:
                raise KeyError(f"task {task.task_id} exists")
            self._agents.items[agent.agent_id] = replace(agent, task_count=agent.task_count + 1)
            self.put(task)
            return True

    def save_if_unchanged(self, read: Task, new: Task) -> Task | None:
        with self._lock:
            now = self.items.get(read.task_id)
            if now is None or (now.version, now.status, now.schedule_version, now.due_at) != (
                read.version,
                read.status,
                read.schedule_version,
                read.due_at,
            ):
                return None
            saved = new.evolve(version=read.version + 1)
            self.items[read.task_id] = saved
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
        with self._lock:
            rows = [
                t
                for t in self.items.values()
                if (agent_id is None or t.created_by == agent_id)
                and (status is None or t.status is status)
                and (kind is None or t.schedule.kind == kind)
            ]
            rows.sort(key=lambda t: (t.created_at, self._order[t.task_id]), reverse=True)
        return TaskPage(rows[offset : offset + limit], len(rows) > offset + limit)

    def by_event_key(self, event_keys: Sequence[str]) -> list[Task]:
        wanted = set(event_keys)
        with self._lock:
            found = [t for t in self.items.values() if t.event_key is not None and t.event_key in wanted]
            return sorted(found, key=lambda t: (t.created_at, self._order[t.task_id]))
