"""In-memory adapter of the dispatch ports: the same guarantees as DynamoDB, each verb atomic
under the stores' one lock. The task-side verbs work on the tasks store's own items."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from chalicelib.domain.records import Task, TaskStatus
from chalicelib.store.ports import Acquired, DueEntry, DueFire, HeldElsewhere, slot_of


class MemoryDue:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self._slots: dict[str, list[str]] = {}  # shard -> its slots, sorted
        self.entries: dict[tuple[str, str], DueEntry] = {}

    def add(self, entry: DueEntry) -> bool:
        key = (entry.shard, entry.slot)
        with self._lock:
            held = self.entries.get(key)
            if held is not None and held.schedule_version > entry.schedule_version:
                return False
            if held is None:
                bisect.insort(self._slots.setdefault(entry.shard, []), entry.slot)
            self.entries[key] = entry
            return True

    def read(self, shard: str, until: int, after: str | None = None) -> Iterator[DueEntry]:
        upper = slot_of(until, "~")
        with self._lock:  # a snapshot, as one query page would be
            slots = self._slots.get(shard, [])
            lo = 0 if after is None else bisect.bisect_right(slots, after)
            hi = bisect.bisect_right(slots, upper)
            found = [self.entries[(shard, s)] for s in slots[lo:hi]]
        yield from found


@dataclass
class _Lease:
    holder: str
    until: int


class MemoryShardLeases:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.leases: dict[str, _Lease] = {}
        self.marks: dict[str, str] = {}

    def acquire_shard(self, shard: str, holder: str, now: int, seconds: int) -> Acquired | HeldElsewhere:
        with self._lock:
            held = self.leases.get(shard)
            if held is not None and not held.until < now:
                return HeldElsewhere(held.until)
            self.leases[shard] = _Lease(holder, now + seconds)
            return Acquired(now + seconds)

    def release_shard(self, shard: str, holder: str) -> None:
        with self._lock:
            held = self.leases.get(shard)
            if held is not None and held.holder == holder:
                del self.leases[shard]

    def watermark(self, shard: str) -> str | None:
        with self._lock:
            return self.marks.get(shard)

    def advance_watermark(self, shard: str, through: str) -> bool:
        with self._lock:
            mark = self.marks.get(shard)
            if mark is not None and not mark < through:
                return False
            self.marks[shard] = through
            return True


class _TaskItems(Protocol):
    items: dict[str, Task]


class MemoryDueTasks:
    """Over the in-memory tasks store's items (`MemoryTasks.items`)."""

    def __init__(self, tasks: _TaskItems, lock: threading.RLock | None = None) -> None:
        self._tasks = tasks
        self._lock = lock or threading.RLock()

    def due_tasks(self, shard: str, until: int) -> Iterator[DueFire]:
        with self._lock:
            due = sorted(
                (
                    t
                    for t in self._tasks.items.values()
                    if t.due_shard == shard and t.due_at is not None and t.due_at <= until
                ),
                key=lambda t: (t.due_at or 0, t.task_id),
            )
        for t in due:
            yield DueFire(t.task_id, t.created_by, t.schedule, t.schedule_version, t.definition.priority, t.due_at or 0)

    def advance_due(self, task_id: str, due_at: int, schedule_version: int, *, complete: bool = False) -> bool:
        with self._lock:
            t = self._tasks.items.get(task_id)
            if t is None or t.due_at != due_at or t.schedule_version != schedule_version:
                return False
            t = t.evolve(due_at=None, due_shard=None)
            self._tasks.items[task_id] = t.evolve(status=TaskStatus.COMPLETED) if complete else t
            return True

    def pause_with_error(self, task_id: str, schedule_version: int, error: str) -> bool:
        return self._if_active(task_id, schedule_version, status=TaskStatus.PAUSED, schedule_error=error)

    def complete(self, task_id: str, schedule_version: int) -> bool:
        return self._if_active(task_id, schedule_version, status=TaskStatus.COMPLETED)

    def _if_active(self, task_id: str, schedule_version: int, **changes: object) -> bool:
        with self._lock:
            t = self._tasks.items.get(task_id)
            if t is None or t.status != TaskStatus.ACTIVE or t.schedule_version != schedule_version:
                return False
            self._tasks.items[task_id] = t.evolve(due_at=None, due_shard=None, **changes)
            return True
