"""The DynamoDB adapter of every storage port (PynamoDB models in `store/models.py`)."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist

from chalicelib.domain.records import Task
from chalicelib.store.dynamo.mapping import task_from_item
from chalicelib.store.models import TaskModel

# ---- tasks ----------------------------------------------------------------------------------


class DynamoTasks:
    def get(self, task_id: str) -> Task | None:
        try:
            return task_from_item(TaskModel.get(task_id, consistent_read=True))
        except DoesNotExist:
            return None


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------


# ---- agents, events, idempotency keys (services) --------------------------------------------
