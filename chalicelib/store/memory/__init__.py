"""The in-memory adapter of every storage port: the same guarantees as DynamoDB (conditional
writes are atomic under one lock), for fast tests of tick, worker and lifecycle logic and for
the scale model. Not for production: nothing is persisted."""

from __future__ import annotations

import threading

from chalicelib.domain.records import Task

# ---- tasks ----------------------------------------------------------------------------------


class MemoryTasks:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[str, Task] = {}

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self.items.get(task_id)


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------


# ---- agents, events, idempotency keys (services) --------------------------------------------
