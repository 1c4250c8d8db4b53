"""Storage: the ports (`ports.py`), their DynamoDB adapter (`dynamo/`, over the PynamoDB models
in `models.py`) and their in-memory twin (`memory/`). Services reach storage through
`stores()`; which adapter it returns is configuration (`TASKAPI_STORE`), or a test's choice
(`use`)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

from chalicelib.store import ports


@dataclass(frozen=True)
class Stores:
    tasks: ports.TaskStore
    # ---- execution ----
    # ---- dispatch ----
    # ---- services ----


def dynamo() -> Stores:
    from chalicelib.store.dynamo import DynamoTasks

    return Stores(tasks=DynamoTasks())


def memory() -> Stores:
    from chalicelib.store.memory import MemoryTasks

    lock = threading.RLock()  # one lock: a conditional write across stores stays atomic
    return Stores(tasks=MemoryTasks(lock))


_chosen: Stores | None = None


@lru_cache(maxsize=1)
def _configured() -> Stores:
    return memory() if os.environ.get("TASKAPI_STORE", "dynamodb") == "memory" else dynamo()


def stores() -> Stores:
    return _chosen or _configured()


def use(chosen: Stores | None) -> None:
    """Tests and the scale model hand in a set of stores (None: back to the configured one)."""
    global _chosen
    _chosen = chosen
