"""The SDK on every route of the running local stack, sync and async."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import tasksapi

from tests.clients.conftest import LOG_PIPELINE, finished, run_async
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e


def _fields(**over: Any) -> dict[str, Any]:
    return {
        "title": "sdk task",
        "description": "made by the SDK tests",
        "schedule_kind": "cron",
        "schedule_expr": "30 2 * * *",
        "timezone": "Europe/Chisinau",
        "payload": LOG_PIPELINE,
        **over,
    }


def test_meta_routes(client: tasksapi.Client) -> None:
    assert client.health().status == "ok"
    doc = client.openapi()
    assert doc["openapi"].startswith("3.") and "/tasks" in doc["paths"]


def test_task_lifecycle_on_every_task_route(client: tasksapi.Client, agent: tasksapi.AgentCreated) -> None:
    # GIVEN a task created without created_by: the SDK fills in the token's agent
    task = client.tasks.create(**_fields())
    assert task.created_by == agent.agent_id == client.agent_id
    assert task.status == "active" and task.version == 1 and task.next_run_at is not None
    assert task.next_run_at.tzinfo is not None

    # WHEN it is read, changed with If-Match, paused, resumed, snoozed, run, previewed, canceled
    assert client.tasks.get(task.id) == task
    changed = client.tasks.update(task.id, if_match=task.version, priority=2)
    assert changed.priority == 2 and changed.version == task.version + 1
    with pytest.raises(tasksapi.PreconditionFailed) as stale:
        client.tasks.update(task.id, if_match=task.version, priority=3)
    assert stale.value.status == 412
    assert client.tasks.pause(task.id).status == "paused"
    assert client.tasks.pause(task.id).status == "paused"  # idempotent
    resumed = client.tasks.resume(task.id)
    assert resumed.status == "active"
    snoozed = client.tasks.snooze(task.id, 3600, reason="db maintenance")
    assert snoozed.snooze_reason == "db maintenance" and snoozed.snoozed_until is not None
    assert snoozed.next_run_at is not None and resumed.next_run_at is not None
    assert (snoozed.next_run_at - resumed.next_run_at).total_seconds() == 3600

    run = client.tasks.run_now(task.id, input={"who": "sdk"})
    assert run.task_id == task.id and run.trigger == "run_now"
    done = finished(client, task.id, run.id)
    assert done.status == "succeeded" and done.steps[0].output == "hello sdk"

    preview = client.tasks.preview(task.id, count=3, after=datetime(2027, 3, 27, tzinfo=UTC))
    assert [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in preview.next_runs] == [
        "2027-03-27T00:30:00Z",
        "2027-03-28T00:00:00Z",  # 02:30 does not exist that day: 03:00 local
        "2027-03-28T23:30:00Z",
    ]

    canceled = client.tasks.cancel(task.id)
    assert canceled.status == "canceled" and client.tasks.cancel(task.id).status == "canceled"
    # THEN a canceled task refuses every change with a 409
    with pytest.raises(tasksapi.Conflict) as conflict:
        client.tasks.update(task.id, title="again")
    assert conflict.value.status == 409 and conflict.value.detail


def test_create_is_idempotent_with_a_key(client: tasksapi.Client) -> None:
    key = f"sdk-{uuid.uuid4()}"
    first = client.tasks.create(idempotency_key=key, **_fields(title="once only"))
    again = client.tasks.create(idempotency_key=key, **_fields(title="once only"))
    assert again.id == first.id
    other = client.tasks.create(**_fields(title="once only"))  # a fresh key each call
    assert other.id != first.id


def test_list_follows_pagination_newest_first(admin: tasksapi.Client) -> None:
    # GIVEN an agent of its own with five tasks
    mine = admin.agents.create("sdk-pages")
    with tasksapi.Client(admin.base_url, mine.token) as c:
        made = [c.tasks.create(**_fields(title=f"page {i}")).id for i in range(5)]
        # WHEN it lists with pages of two
        listed = [t.id for t in c.tasks.list(page_size=2)]
        first_page = c.tasks.page(limit=2)
        # THEN every task comes back once, newest first, across three pages
        assert listed == list(reversed(made))
        assert first_page.next_offset == 2 and len(first_page.tasks) == 2
        assert [t.id for t in c.tasks.list(page_size=2, max_items=3)] == listed[:3]
        c.tasks.pause(made[0])
        assert [t.id for t in c.tasks.list(status="paused")] == [made[0]]
        assert [t.id for t in c.tasks.list(schedule_kind="once")] == []


def test_runs_list_and_get(client: tasksapi.Client) -> None:
    task = client.tasks.create(**_fields(schedule_kind="event", schedule_expr=None))
    ids = [client.tasks.run_now(task.id, input={"who": str(i)}).id for i in range(3)]
    for run_id in ids:
        finished(client, task.id, run_id)
    listed = list(client.runs.list(task.id, page_size=1))
    assert sorted(r.id for r in listed) == sorted(ids) and len(listed) == 3
    page = client.runs.page(task.id, limit=2)
    assert len(page.runs) == 2 and page.next_cursor
    rest = client.runs.page(task.id, limit=2, cursor=page.next_cursor)
    assert len(rest.runs) == 1 and rest.next_cursor is None
    got = client.runs.get(task.id, ids[0])
    assert got.id == ids[0] and got.input == {"who": "0"} and got.status == "succeeded"


def test_schedule_preview_marks_nothing_but_returns_the_servers_fires(client: tasksapi.Client) -> None:
    p = client.schedules.preview(
        "cron", "30 2 * * *", timezone="Europe/Chisinau", count=3, after="2027-03-27T00:00:00Z"
    )
    assert p.description == "At 02:30 AM (Europe/Chisinau)"
    assert [t.isoformat() for t in p.next_runs] == [
        "2027-03-27T00:30:00+00:00",
        "2027-03-28T00:00:00+00:00",
        "2027-03-28T23:30:00+00:00",
    ]
    with pytest.raises(ValueError, match="timezone-aware"):
        client.schedules.preview("cron", "0 * * * *", after=datetime(2027, 1, 1))


def test_events_start_matching_event_tasks(client: tasksapi.Client) -> None:
    task = client.tasks.create(**_fields(schedule_kind="event", schedule_expr="sdk.order.*"))
    accepted = client.events.send("sdk.order.created", {"id": 42})
    assert accepted.event_id and accepted.runs == [{"task_id": task.id, "run_id": accepted.runs[0]["run_id"]}]
    run = finished(client, task.id, accepted.runs[0]["run_id"])
    assert run.trigger == "event" and run.event["data"] == {"id": 42}
    assert client.events.send("sdk.unrelated").runs == []


def test_errors_are_typed_and_name_the_fields(client: tasksapi.Client, agent: tasksapi.AgentCreated) -> None:
    with pytest.raises(tasksapi.BadRequest) as bad:
        client.tasks.create(**_fields(title="", priority=12))
    fields = {e.field for e in bad.value.errors}
    assert {"title", "priority"} <= fields
    assert bad.value.status == 400 and bad.value.title == "Invalid request"
    assert "priority" in str(bad.value) and isinstance(bad.value, tasksapi.ApiError)

    with pytest.raises(tasksapi.NotFound) as missing:
        client.tasks.get(str(uuid.uuid4()))
    assert missing.value.status == 404
    with pytest.raises(tasksapi.NotFound):  # a hostile id stays one path segment
        client.tasks.get("../agents")
    with pytest.raises(tasksapi.Forbidden):
        client.tasks.create(**_fields(created_by=str(uuid.uuid4())))
    with pytest.raises(tasksapi.Forbidden):
        client.agents.list()  # an agent is not the admin
    with pytest.raises(tasksapi.Unauthorized):
        tasksapi.Client(client.base_url, "tapi_not_a_token").tasks.get(str(uuid.uuid4()))


def test_agents_admin_routes(admin: tasksapi.Client, local_stack: LocalStack) -> None:
    made = admin.agents.create("sdk-admin")
    assert made.token.startswith("tapi_") and made.signing_secret.startswith("whsec_")
    assert made.agent_id in {a.agent_id for a in admin.agents.list()}
    with tasksapi.Client(local_stack.base_url, made.token) as c:
        assert list(c.tasks.list()) == []
        revoked = admin.agents.revoke(made.agent_id)
        assert revoked.status == "revoked"
        with pytest.raises(tasksapi.Unauthorized):
            list(c.tasks.list())
    with pytest.raises(tasksapi.NotFound):
        admin.agents.revoke(str(uuid.uuid4()))


def test_agent_egress_routes(admin: tasksapi.Client, local_stack: LocalStack) -> None:
    made = admin.agents.create("sdk-egress")
    assert admin.agents.egress(made.agent_id).aws_targets == []
    got = admin.agents.set_egress(
        made.agent_id, aws_targets=["arn:aws:sns:us-east-1:1:t-*"], http_allow=["10.0.0.0/8:443"]
    )
    assert got.agent_id == made.agent_id and got.http_allow == ["10.0.0.0/8:443"]
    with tasksapi.Client(local_stack.base_url, made.token) as c:
        assert c.agents.egress(made.agent_id) == got  # an agent reads its own lists
        with pytest.raises(tasksapi.Forbidden):
            c.agents.set_egress(made.agent_id, aws_targets=["*"])
    with pytest.raises(tasksapi.BadRequest) as bad:
        admin.agents.set_egress(made.agent_id, http_allow=["host:0"])
    assert [e.field for e in bad.value.errors] == ["http_allow[0]"]

    async def twin() -> None:
        async with tasksapi.AsyncClient(local_stack.base_url, local_stack.admin_token) as root:
            assert (await root.agents.set_egress(made.agent_id)).aws_targets == []
            assert (await root.agents.egress(made.agent_id)).http_allow == []

    run_async(twin())


def test_agent_budget_routes(admin: tasksapi.Client, local_stack: LocalStack) -> None:
    made = admin.agents.create("sdk-budget")
    fresh = admin.agents.budget(made.agent_id)
    assert fresh.agent.runs_per_minute is None and fresh.effective == fresh.defaults
    got = admin.agents.set_budget(made.agent_id, runs_per_minute=30, min_interval_seconds=120)
    assert (got.agent.runs_per_minute, got.effective.runs_per_minute, got.effective.min_interval_seconds) == (
        30,
        30,
        120,
    )
    assert got.agent.runs_burst is None and got.effective.runs_burst == fresh.defaults.runs_burst
    with tasksapi.Client(local_stack.base_url, made.token) as c:
        assert c.agents.budget(made.agent_id) == got  # an agent reads its own budget
        with pytest.raises(tasksapi.Forbidden):
            c.agents.set_budget(made.agent_id, runs_per_minute=100_000)
    with pytest.raises(tasksapi.BadRequest) as bad:
        admin.agents.set_budget(made.agent_id, min_interval_seconds=1)
    assert [e.field for e in bad.value.errors] == ["min_interval_seconds"]

    async def twin() -> None:
        async with tasksapi.AsyncClient(local_stack.base_url, local_stack.admin_token) as root:
            assert (await root.agents.set_budget(made.agent_id)).agent.runs_per_minute is None
            assert (await root.agents.budget(made.agent_id)).agent.min_interval_seconds is None

    run_async(twin())


def test_config_errors_say_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKS_API_URL", raising=False)
    monkeypatch.delenv("TASKS_API_TOKEN", raising=False)
    with pytest.raises(tasksapi.ConfigError, match="TASKS_API_URL"):
        tasksapi.Client()
    monkeypatch.setenv("TASKS_API_URL", "http://127.0.0.1:9")
    with pytest.raises(tasksapi.ConfigError, match="TASKS_API_TOKEN"):
        tasksapi.Client()
    monkeypatch.setenv("TASKS_API_TOKEN", "tapi_x_y")
    c = tasksapi.Client(max_retries=0)
    assert c.base_url == "http://127.0.0.1:9" and "tapi_x_y" not in repr(c)
    with pytest.raises(tasksapi.NetworkError):  # nothing listens on port 9
        c.health()


# ---- async ---------------------------------------------------------------------------------


def test_async_client_on_every_route(local_stack: LocalStack, admin: tasksapi.Client) -> None:
    made = admin.agents.create("sdk-async")

    async def scenario() -> None:
        async with tasksapi.AsyncClient(local_stack.base_url, local_stack.admin_token) as root:
            assert made.agent_id in {a.agent_id for a in await root.agents.list()}
            extra = await root.agents.create("sdk-async-extra")
            assert (await root.agents.revoke(extra.agent_id)).status == "revoked"
        async with tasksapi.AsyncClient(local_stack.base_url, made.token) as c:
            assert (await c.health()).status == "ok"
            assert "paths" in await c.openapi()
            t = await c.tasks.create(**_fields())
            assert t.created_by == made.agent_id
            assert (await c.tasks.get(t.id)).id == t.id
            assert (await c.tasks.update(t.id, if_match=1, priority=3)).priority == 3
            with pytest.raises(tasksapi.PreconditionFailed):
                await c.tasks.update(t.id, if_match=1, priority=4)
            assert (await c.tasks.pause(t.id)).status == "paused"
            assert (await c.tasks.resume(t.id)).status == "active"
            assert (await c.tasks.snooze(t.id, 60)).snoozed_until is not None
            preview = await c.tasks.preview(t.id, count=2)
            assert len(preview.next_runs) == 2
            run = await c.tasks.run_now(t.id, input={"who": "async"})
            for _ in range(150):
                got = await c.runs.get(t.id, run.id)
                if got.status == "succeeded":
                    break
                await asyncio.sleep(0.2)
            assert got.status == "succeeded" and got.steps[0].output == "hello async"
            assert [r.id async for r in c.runs.list(t.id)] == [run.id]
            assert (await c.runs.page(t.id)).runs[0].id == run.id
            assert [x.id async for x in c.tasks.list(page_size=1)] == [t.id]
            assert (await c.tasks.page()).tasks[0].id == t.id
            sched = await c.schedules.preview("rrule", "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", count=2)
            assert len(sched.next_runs) == 2
            assert (await c.events.send("sdk.async.nothing")).runs == []
            assert (await c.tasks.cancel(t.id)).status == "canceled"
            with pytest.raises(tasksapi.BadRequest) as bad:
                await c.tasks.snooze(t.id, 0)
            assert [e.field for e in bad.value.errors] == ["delay_seconds"]

    run_async(scenario())
