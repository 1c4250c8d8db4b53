"""The SDK, and the MCP tools built on it, kept in step with the served `/openapi.json`.

Fails when a field exists in the OpenAPI document and not in the SDK model that mirrors it (or
the other way round), when the API gains a schema or a route the SDK does not cover, or when a
route the SDK calls is not served. The models accept unknown fields at run time (a newer server
never breaks an older client); this test is where a new field gets noticed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import tasksapi
from tasksapi import _routes as routes
from tasksapi import models
from tasksapi._http import Call
from tasksapi.mcp_server import build_server
from tasksapi.models import OPENAPI_COMPONENTS

from tests.clients.conftest import run_async
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

# Parts of a task's pipeline: the SDK passes `payload` through as JSON and the server validates it.
NOT_MODELLED = re.compile(r"^(Pipeline|\w+Step)$")


@pytest.fixture(scope="module")
def served(local_stack: LocalStack) -> dict[str, Any]:
    with tasksapi.Client(local_stack.base_url, local_stack.admin_token) as c:
        return c.openapi()


def _properties(doc: dict[str, Any], name: str) -> set[str]:
    return set(doc["components"]["schemas"][name].get("properties", {}))


def test_every_sdk_model_has_exactly_the_fields_of_its_schema(served: dict[str, Any]) -> None:
    schemas = served["components"]["schemas"]
    drift = {}
    for name, model in OPENAPI_COMPONENTS.items():
        assert name in schemas, f"the SDK mirrors {name}, which the API no longer serves"
        api, sdk = _properties(served, name), set(model.model_fields)
        if api != sdk:
            drift[name] = {"only in the API": sorted(api - sdk), "only in the SDK": sorted(sdk - api)}
    assert not drift, f"SDK models drifted from /openapi.json: {drift}"


def test_every_served_schema_is_mirrored_by_the_sdk(served: dict[str, Any]) -> None:
    # Object schemas only: a named scalar (an enum of time zones, say) is a field's type, not a model.
    objects = {n for n, s in served["components"]["schemas"].items() if s.get("type") == "object" or "properties" in s}
    unmirrored = {n for n in objects if n not in OPENAPI_COMPONENTS and not NOT_MODELLED.match(n)}
    assert not unmirrored, f"schemas the SDK has no model for: {sorted(unmirrored)}"


def _sdk_calls() -> list[tuple[str, str]]:
    i = "00000000-0000-4000-8000-000000000000"
    calls: list[Call[Any]] = [
        routes.health(),
        routes.openapi(),
        routes.create_task({}, None),
        routes.list_tasks(status=None, created_by=None, schedule_kind=None, limit=1, offset=0),
        routes.get_task(i),
        routes.update_task(i, {}, None),
        *(routes.lifecycle(i, a) for a in ("pause", "resume", "cancel")),
        routes.snooze(i, 1, None),
        routes.run_now(i, None),
        routes.preview_task(i, None, None),
        routes.list_runs(i, 1, None),
        routes.get_run(i, "run"),
        routes.preview_schedule(
            "cron",
            "* * * * *",
            timezone=None,
            count=None,
            after=None,
            jitter_seconds=None,
            starts_at=None,
            ends_at=None,
        ),
        routes.send_event("e", None),
        routes.create_agent("a"),
        routes.list_agents(),
        routes.revoke_agent(i),
        routes.get_egress(i),
        routes.set_egress(i, [], []),
        routes.get_budget(i),
        routes.set_budget(i, models.BudgetUpdate()),
    ]
    return [(c.method, c.path) for c in calls]


def test_the_sdk_calls_every_served_route_and_only_those(served: dict[str, Any]) -> None:
    operations = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    covered: set[tuple[str, str]] = set()
    for method, path in _sdk_calls():
        match = [(m, p) for m, p in operations if m == method and re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", p), path)]
        assert match, f"the SDK calls {method} {path}, which /openapi.json does not list"
        covered.update(match)
    assert operations - covered == set(), f"routes the SDK has no method for: {sorted(operations - covered)}"


def test_mcp_task_tools_take_every_task_field(served: dict[str, Any]) -> None:
    tools = {t.name: t for t in run_async(build_server("http://unused.test", "tapi_x_y").list_tools())}

    def params(name: str, *own: str) -> set[str]:
        return set(tools[name].input_schema["properties"]) - set(own)

    assert params("create_task", "idempotency_key") == _properties(served, "TaskCreate")
    # created_by never changes (the API refuses it), so update_task does not offer it
    assert params("update_task", "task_id", "if_match") == _properties(served, "TaskUpdate") - {"created_by"}
    assert params("snooze_task", "task_id") == _properties(served, "SnoozeRequest")
    assert params("run_task_now", "task_id") == _properties(served, "RunNowRequest")
    assert params("send_event") == _properties(served, "EventCreate")
