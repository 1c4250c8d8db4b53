"""Shared bench plumbing: a moto server child, the environment, results.json, request counting."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
sys.path.insert(0, str(ROOT))


def start_emulator(prefix: str) -> Any:
    """Start a moto server, point this process at it and create the resources from infra/.
    Must run before anything imports chalicelib (PynamoDB reads names at import)."""
    from local.emulator import MotoProcess
    from local.env import free_port

    moto = MotoProcess(free_port())
    moto.start()
    os.environ.update(
        AWS_ENDPOINT_URL=moto.endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        TASKAPI_PREFIX=prefix,
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    import boto3

    from infra import stack

    stack.deploy(boto3.client("cloudformation"), prefix)
    stack.complete_for_emulator(boto3.client("dynamodb"), boto3.client("cloudwatch"), prefix)
    return moto


def write_results(figures: dict[str, Any]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(figures)
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class Requests:
    """Count AWS calls per service.operation with botocore event hooks on the given clients."""

    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients
        self.calls: dict[str, int] = {}
        self.params: dict[str, list[dict[str, Any]]] = {}  # request parameters per operation
        self.query_bytes: list[int] = []  # per DynamoDB Query: the size of the items it returned

    def _hook(self, model: Any, **_: Any) -> None:
        key = f"{model.service_model.service_name}.{model.name}"
        self.calls[key] = self.calls.get(key, 0) + 1

    def _params(self, model: Any, params: Any = None, **_: Any) -> None:
        # before-parameter-build sees the API parameters (before-call sees the serialized body)
        if isinstance(params, dict):
            self.params.setdefault(f"{model.service_model.service_name}.{model.name}", []).append(dict(params))

    def _after(self, model: Any, parsed: Any = None, **_: Any) -> None:
        if model.name == "Query" and isinstance(parsed, dict):
            self.query_bytes.append(len(json.dumps(parsed.get("Items", []), default=str)))

    def __enter__(self) -> Requests:
        for c in self.clients:
            c.meta.events.register("before-call", self._hook)
            c.meta.events.register("before-parameter-build", self._params)
            c.meta.events.register("after-call.dynamodb", self._after)
        return self

    def __exit__(self, *exc: Any) -> None:
        for c in self.clients:
            c.meta.events.unregister("before-call", self._hook)
            c.meta.events.unregister("before-parameter-build", self._params)
            c.meta.events.unregister("after-call.dynamodb", self._after)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def app_clients() -> list[Any]:
    """Every botocore client the app uses: the wiring module's and each PynamoDB model's."""
    from chalicelib.platform import wiring
    from chalicelib.store import models, stores

    stores()  # first: building the stores points the models at their tables, with new connections
    tables = (
        models.TaskModel,
        models.RunModel,
        models.AgentModel,
        models.KeyModel,
        models.EventModel,
        models.DueModel,
        models.StatsModel,
    )
    pynamo = {id(c): c for c in (m._get_connection().connection.client for m in tables)}
    return [wiring.client("sqs"), *pynamo.values()]


def store_hourly_tasks(
    dynamodb: Any, prefix: str, agent: str, created: str, start: int, n: int, due_at: int, *, running: bool
) -> None:
    """Store n synthetic hourly tasks (ids start..start+n) directly, 25 items a batch — the API
    would take minutes for thousands. Running: the next fire `due_at` is a due-table entry;
    else the schedule starts at `due_at` (the task's own index, as after a create)."""
    from chalicelib.dispatch.plan import shard_for
    from chalicelib.store.ports import slot_of

    sched = json.dumps(
        {
            "schedule_kind": "cron",
            "schedule_expr": "0 * * * *",
            "timezone": "UTC",
            "jitter_seconds": 0,
            "starts_at": None,
            "ends_at": None,
            "misfire_policy": "run_once",
            "anchor": created,
        }
    )
    spec = json.dumps(
        {
            "title": "bench",
            "description": "",
            "priority": 5,
            "max_retries": 0,
            "backoff_strategy": "fixed",
            "payload": {"steps": [{"id": "a", "type": "log", "message": "x"}]},
        }
    )
    batches: dict[str, list[dict[str, Any]]] = {"tasks": [], "due": []}
    for i in range(start, start + n):
        tid = f"00000000-0000-4000-8000-{i:012d}"
        item = {
            "task_id": {"S": tid},
            "created_by": {"S": agent},
            "created_at": {"S": created},
            "created_sk": {"S": f"{created}#{i:020d}#{tid}"},
            "updated_at": {"S": created},
            "status": {"S": "active"},
            "schedule_kind": {"S": "cron"},
            "priority": {"N": "5"},
            "version": {"N": "1"},
            "schedule_version": {"N": "1"},
            "spec": {"S": spec},
            "sched": {"S": sched},
        }
        if running:
            entry = {
                "shard": {"S": shard_for(tid)},
                "slot": {"S": slot_of(due_at, tid)},
                "task_id": {"S": tid},
                "fire": {"N": str(due_at)},
                "schedule_version": {"N": "1"},
            }
            batches["due"].append({"PutRequest": {"Item": entry}})
        else:
            item.update(due_shard={"S": shard_for(tid)}, due_at={"N": str(due_at)})
        batches["tasks"].append({"PutRequest": {"Item": item}})
        for table, batch in batches.items():
            if len(batch) == 25 or (i == start + n - 1 and batch):
                dynamodb.batch_write_item(RequestItems={prefix + table: batch})
                batch.clear()
