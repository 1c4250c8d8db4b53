"""In-memory adapter of the dispatch ports: the same guarantees as DynamoDB, each verb atomic
under the stores' one lock. The task-side verbs work on the tasks store's own items."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.domain.records import Task, TaskStatus
from chalicelib.store.ports import Acquired, DueEntry, DueFire, HeldElsewhere, slot_of


class MemoryDue:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self._slots: dict[str, list[str]] = {}  # shard -> its slots, sorted when read
        self._unsorted: set[str] = set()  # shards with slots added since
        self.entries: dict[tuple[str, str], DueEntry] = {}

    def add(self, entry: DueEntry) -> bool:
        key = (entry.shard, entry.slot)
        with self._lock:
            held = self.entries.get(key)
            if held is not None and held.schedule_version > entry.schedule_version:
                return False
            if held is None:  # appended, sorted on the next read (a million adds stay linear)
                self._slots.setdefault(entry.shard, []).append(entry.slot)
                self._unsorted.add(entry.shard)
            self.entries[key] = entry
            return True

    def add_all(self, entries: Iterable[DueEntry]) -> None:
        """Seed entries unconditionally (tests and the scale model's million tasks)."""
        with self._lock:
            for e in entries:
                key = (e.shard, e.slot)
                if key not in self.entries:
                    self._slots.setdefault(e.shard, []).append(key[1])
                    self._unsorted.add(e.shard)
                self.entries[key] = e

    def read(self, shard: str, until: int, after: str | None = None) -> Iterator[DueEntry]:
        upper = slot_of(until, "~")
        with self._lock:  # a snapshot, as one query page would be
            slots = self._slots.get(shard, [])
            if shard in self._unsorted:
                slots.sort()
                self._unsorted.discard(shard)
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
            if held is not None and held.holder != holder and not held.until < now:
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


class ItemsWithDueIndex(dict[str, Task]):
    """The tasks store's items, keeping the sparse `due` index as DynamoDB keeps a GSI: on
    every write. (A scan of a million tasks per shard and tick would make the scale model
    measure the twin, not the tick.)"""

    def __init__(self, items: Mapping[str, Task]) -> None:
        super().__init__()
        self.due: dict[str, dict[str, Task]] = {}  # due_shard -> task id -> task
        for k, v in items.items():
            self[k] = v

    def __setitem__(self, key: str, task: Task) -> None:
        self._unindex(key)
        super().__setitem__(key, task)
        if task.due_shard is not None and task.due_at is not None:
            self.due.setdefault(task.due_shard, {})[key] = task

    def __delitem__(self, key: str) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._unindex(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        self.due.clear()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def _unindex(self, key: str) -> None:
        old = self.get(key)
        if old is not None and old.due_shard is not None:
            self.due.get(old.due_shard, {}).pop(key, None)


class MemoryDueTasks:
    """Over the in-memory tasks store's items (`MemoryTasks.items`), which it indexes."""

    def __init__(self, tasks: _TaskItems, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        with self._lock:
            if not isinstance(tasks.items, ItemsWithDueIndex):
                tasks.items = ItemsWithDueIndex(tasks.items)
        self._tasks = tasks

    def due_tasks(self, shard: str, until: int) -> Iterator[DueFire]:
        items = self._tasks.items
        assert isinstance(items, ItemsWithDueIndex)
        with self._lock:
            due = sorted(
                (t for t in items.due.get(shard, {}).values() if t.due_at is not None and t.due_at <= until),
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
