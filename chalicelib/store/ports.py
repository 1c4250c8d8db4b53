"""The storage ports: a few verbs per store, named for what they guarantee, taking and
returning domain records (`chalicelib.domain.records`) and outcomes, never storage items or
botocore errors. Two adapters implement every port: DynamoDB (`store/dynamo`, PynamoDB) and
in memory (`store/memory`), and one contract suite (`tests/store`) runs against both.

A conditional write is a verb that says what it guarantees (`put_if_absent`, `claim_run`,
`acquire_shard`) and answers with an outcome; only an unexpected storage failure raises.
"""

from __future__ import annotations

from typing import Protocol

from chalicelib.domain.records import Task

# ---- tasks (shared by services, dispatch and execution) -------------------------------------


class TaskStore(Protocol):
    def get(self, task_id: str) -> Task | None:
        """A consistent read; None when absent."""
        ...


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------


# ---- agents, events, idempotency keys (services) --------------------------------------------
