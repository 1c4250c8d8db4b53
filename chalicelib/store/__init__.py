"""Storage: the ports (`ports.py`), their DynamoDB adapter (`dynamo/`, over the PynamoDB models
in `models.py`) and their in-memory twin (`memory/`). Services reach storage through
`stores()`; which adapter it returns is configuration (`TASKAPI_STORE`), or a test's choice
(`use`). The builders are `on_dynamodb()` and `in_memory()`: not `dynamo()`/`memory()`, names
the subpackages take over on the package as soon as they are imported."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

from chalicelib.platform.config import settings
from chalicelib.store import ports


@dataclass(frozen=True)
class Stores:
    tasks: ports.TaskStore
    # ---- execution ----
    runs: ports.RunStore
    sweep: ports.RunSweep
    stats: ports.StatsStore
    leases: ports.LeaseStore
    # ---- dispatch ----
    due: ports.DueStore
    shards: ports.ShardLeases
    due_tasks: ports.DueTasks
    # ---- services ----
    agents: ports.AgentStore
    events: ports.EventStore
    keys: ports.IdempotencyStore


def on_dynamodb(prefix: str | None = None) -> Stores:
    """The DynamoDB stores, over the tables of `prefix` (default: the settings')."""
    from chalicelib.store import models
    from chalicelib.store.dynamo.dispatch import DynamoDue, DynamoDueTasks, DynamoShardLeases
    from chalicelib.store.dynamo.execution import DynamoLeases, DynamoRuns, DynamoRunSweep, DynamoStats
    from chalicelib.store.dynamo.services import DynamoAgents, DynamoEvents, DynamoKeys
    from chalicelib.store.dynamo.tasks import DynamoTasks

    models.configure(prefix)
    return Stores(
        tasks=DynamoTasks(),
        # ---- execution ----
        runs=DynamoRuns(),
        sweep=DynamoRunSweep(),
        stats=DynamoStats(),
        leases=DynamoLeases(),
        # ---- dispatch ----
        due=DynamoDue(),
        shards=DynamoShardLeases(),
        due_tasks=DynamoDueTasks(),
        # ---- services ----
        agents=DynamoAgents(),
        events=DynamoEvents(),
        keys=DynamoKeys(),
    )


def in_memory() -> Stores:
    from chalicelib.store.memory.dispatch import MemoryDue, MemoryDueTasks, MemoryShardLeases
    from chalicelib.store.memory.execution import MemoryLeases, MemoryRuns, MemoryRunSweep, MemoryStats
    from chalicelib.store.memory.services import MemoryAgents, MemoryEvents, MemoryKeys
    from chalicelib.store.memory.tasks import MemoryTasks

    lock = threading.RLock()  # one lock: a conditional write across stores stays atomic
    agents = MemoryAgents(lock)
    tasks = MemoryTasks(lock, agents)
    runs = MemoryRuns(lock)
    return Stores(
        tasks=tasks,
        # ---- execution ----
        runs=runs,
        sweep=MemoryRunSweep(runs, lock),
        stats=MemoryStats(lock),
        leases=MemoryLeases(lock),
        # ---- dispatch ----
        due=MemoryDue(lock),
        shards=MemoryShardLeases(lock),
        due_tasks=MemoryDueTasks(tasks, lock),
        # ---- services ----
        agents=agents,
        events=MemoryEvents(lock),
        keys=MemoryKeys(lock),
    )


_chosen: Stores | None = None


@lru_cache(maxsize=1)
def _configured(kind: str, prefix: str) -> Stores:
    return in_memory() if kind == "memory" else on_dynamodb(prefix)


def stores() -> Stores:
    """The stores in use. Built again when the configuration changes (the store kind, or the
    settings' prefix: the DynamoDB one then points the models at that prefix's tables)."""
    return _chosen or _configured(os.environ.get("TASKAPI_STORE", "dynamodb"), settings().prefix)


def use(chosen: Stores | None) -> None:
    """Tests and the scale model hand in a set of stores (None: back to the configured one)."""
    global _chosen
    _chosen = chosen
