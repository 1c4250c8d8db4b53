"""Task CRUD over the HTTP routes: defaults, validation, isolation, concurrency."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from chalicelib.platform.config import settings
from tests.integration.conftest import ADMIN, task_body


def _count_items(table: str) -> int:
    return boto3.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"]


def test_create_applies_defaults_and_returns_location_and_etag(api):
    agent = api.agent()
    r = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"])
    assert r.status_code == 201, r.body
    t = r.data
    assert r.headers["Location"] == f"/tasks/{t['id']}"
    assert r.headers["ETag"] == f'"{t["version"]}"'
    assert t["status"] == "active" and t["priority"] == 5 and t["max_retries"] == 3
    assert t["backoff_strategy"] == "exponential_jitter" and t["misfire_policy"] == "run_once"
    assert t["jitter_seconds"] == 0 and t["dedupe_key"] is None and t["concurrency_limit"] is None
    assert t["run_count"] == 0 and t["failure_count"] == 0 and t["last_run_at"] is None
    assert t["next_run_at"].endswith(":30:00Z")  # 02:30 in Chisinau is hh:30 UTC
    assert t["created_at"].endswith("Z") and t["created_by"] == agent["agent_id"]
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"])
    assert got.status_code == 200 and got.data == t


def test_dedupe_and_concurrency_defaults(api):
    agent = api.agent()
    t = api.call(
        "POST", "/tasks", task_body(agent["agent_id"], dedupe_key="d", concurrency_key="c"), token=agent["token"]
    ).data
    assert t["dedupe_window_seconds"] == 3600 and t["concurrency_limit"] == 1


BAD_FIELDS = [
    ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": 5}, "title"),
    ({"description": "x" * 4001}, "description"),
    ({"schedule_kind": "weekly"}, "schedule_kind"),
    ({"schedule_expr": "61 * * * *"}, "schedule_expr"),
    ({"schedule_expr": "* * *"}, "schedule_expr"),
    ({"schedule_kind": "rrule", "schedule_expr": "FREQ=SECONDLY"}, "schedule_expr"),
    ({"schedule_kind": "once", "schedule_expr": "2001-01-01T00:00:00Z"}, "schedule_expr"),
    ({"schedule_kind": "once", "schedule_expr": "tomorrow"}, "schedule_expr"),
    ({"schedule_expr": None}, "schedule_expr"),
    ({"timezone": "Mars/Base"}, "timezone"),
    ({"payload": {}}, "payload.steps"),
    ({"payload": {"steps": []}}, "payload.steps"),
    ({"payload": {"steps": [{"id": "a", "type": "teleport"}]}}, "payload.steps[0]"),
    ({"payload": {"steps": [{"id": "a", "type": "http", "url": "ftp://x"}]}}, "payload.steps[0].url"),
    (
        {"payload": {"steps": [{"id": "a", "type": "log", "message": "x", "timeout_seconds": 61}]}},
        "payload.steps[0].timeout_seconds",
    ),
    (
        {
            "payload": {
                "steps": [{"id": "a", "type": "log", "message": "x"}, {"id": "a", "type": "log", "message": "y"}]
            }
        },
        "payload.steps",
    ),
    ({"payload": {"steps": [{"id": "a", "type": "log", "message": "x", "colour": 1}]}}, "payload.steps[0].colour"),
    ({"created_by": "not-a-uuid"}, "created_by"),
    ({"priority": 0}, "priority"),
    ({"priority": 10}, "priority"),
    ({"priority": "1"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"max_retries": 26}, "max_retries"),
    ({"max_retries": -1}, "max_retries"),
    ({"backoff_strategy": "random"}, "backoff_strategy"),
    ({"dedupe_key": "x" * 257}, "dedupe_key"),
    ({"dedupe_key": "k", "dedupe_window_seconds": 0}, "dedupe_window_seconds"),
    ({"dedupe_key": "k", "dedupe_window_seconds": 2_592_001}, "dedupe_window_seconds"),
    ({"dedupe_window_seconds": 60}, "dedupe_window_seconds"),
    ({"concurrency_key": "x" * 257}, "concurrency_key"),
    ({"concurrency_key": "c", "concurrency_limit": 101}, "concurrency_limit"),
    ({"concurrency_limit": 2}, "concurrency_limit"),
    ({"jitter_seconds": 3601}, "jitter_seconds"),
    ({"starts_at": "yesterday"}, "starts_at"),
    ({"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, "ends_at"),
    ({"misfire_policy": "sometimes"}, "misfire_policy"),
    ({"surprise": True}, "surprise"),
]


@pytest.mark.parametrize(("over", "field"), BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_invalid_create_is_400_naming_the_field_and_stores_nothing(api, over, field):
    agent = api.agent()
    body = task_body(agent["agent_id"])
    body.update(over)
    body = {k: v for k, v in body.items() if v is not None}
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 400, r.body
    assert r.headers["Content-Type"] == "application/problem+json"
    fields = [e["field"] for e in r.data["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), fields
    assert all(e["message"] for e in r.data["errors"])
    assert _count_items("test-tasks") == 0


def test_missing_required_fields_are_each_named(api):
    agent = api.agent()
    r = api.call("POST", "/tasks", {}, token=agent["token"])
    assert r.status_code == 400
    named = {e["field"] for e in r.data["errors"]}
    assert {"title", "description", "schedule_kind", "payload", "created_by"} <= named


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "null", '{"a":' * 5000])
def test_malformed_bodies_are_400(api, raw):
    agent = api.agent()
    r = api.call("POST", "/tasks", raw=raw, token=agent["token"])
    assert r.status_code == 400, r.body
    assert r.data["errors"][0]["field"] == "body"


def test_body_over_256_kib_is_413(api):
    agent = api.agent()
    body = task_body(agent["agent_id"], description="x" * (257 * 1024))
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/problem+json"


def test_payload_over_64_kib_is_413(api):
    agent = api.agent()
    steps = [{"id": f"s{i}", "type": "log", "message": "y" * 4000} for i in range(20)]
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], payload={"steps": steps}), token=agent["token"])
    assert r.status_code == 413, r.body
    assert _count_items("test-tasks") == 0


def test_created_by_must_be_the_caller(api):
    a, b = api.agent("a"), api.agent("b")
    r = api.call("POST", "/tasks", task_body(b["agent_id"]), token=a["token"])
    assert r.status_code == 403
    assert r.data["errors"][0]["field"] == "created_by"


def test_quota_is_429_and_changes_nothing(api, monkeypatch):
    monkeypatch.setenv("TASKAPI_MAX_TASKS_PER_AGENT", "2")
    settings.cache_clear()
    try:
        agent = api.agent()
        for _ in range(2):
            assert api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).status_code == 201
        r = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"])
        assert r.status_code == 429 and r.headers["Content-Type"] == "application/problem+json"
        assert _count_items("test-tasks") == 2
        other = api.agent("other")  # the quota is per agent
        assert api.call("POST", "/tasks", task_body(other["agent_id"]), token=other["token"]).status_code == 201
    finally:
        monkeypatch.delenv("TASKAPI_MAX_TASKS_PER_AGENT")
        settings.cache_clear()


def test_idempotency_key_replays_the_first_response(api):
    agent = api.agent()
    h = {"Idempotency-Key": "create-report-1"}
    first = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    again = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    assert first.status_code == 201 and again.status_code == 201
    assert again.data["id"] == first.data["id"]
    assert _count_items("test-tasks") == 1
    other = api.call("POST", "/tasks", task_body(agent["agent_id"], title="changed"), token=agent["token"], headers=h)
    assert other.status_code == 409
    # the same key from another agent is another agent's business
    b = api.agent("b")
    r = api.call("POST", "/tasks", task_body(b["agent_id"]), token=b["token"], headers=h)
    assert r.status_code == 201 and r.data["id"] != first.data["id"]


def test_an_idempotency_key_whose_claim_answer_was_lost_creates_the_task(api):
    # The key's claim (a conditional PutItem) lands, its answer is lost and the SDK sends it again,
    # as botocore does when a response never arrives: the resend meets the claim it wrote.
    from chalicelib.store.models import KeyModel

    agent = api.agent()
    client = KeyModel._get_connection().connection.client
    lost: list[str] = []

    def lose_the_answer(response=None, request_dict=None, **_):
        body = (request_dict or {}).get("body") or b""
        if response is not None and response[0].status_code == 200 and b"idem#" in body and not lost:
            lost.append("claim")
            return 0  # retry at once: the request is sent again
        return None

    client.meta.events.register("needs-retry.dynamodb.PutItem", lose_the_answer)
    try:
        h = {"Idempotency-Key": "lost-answer-1"}
        first = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    finally:
        client.meta.events.unregister("needs-retry.dynamodb.PutItem", lose_the_answer)
    assert lost == ["claim"]
    assert first.status_code == 201, first.body
    again = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    assert again.status_code == 201 and again.data["id"] == first.data["id"]
    assert _count_items("test-tasks") == 1


def test_an_idempotent_replay_is_the_first_response_even_after_the_task_changed(api):
    agent = api.agent()
    h = {"Idempotency-Key": "create-then-change"}
    first = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    tid = first.data["id"]
    assert api.call("POST", f"/tasks/{tid}/pause", token=agent["token"]).data["status"] == "paused"
    again = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"], headers=h)
    # Status, body and headers as first sent: version 1, active, not the paused version 2.
    assert again.status_code == 201 and again.body == first.body
    assert again.data["status"] == "active" and again.data["version"] == 1
    assert again.headers["ETag"] == first.headers["ETag"] == '"1"'
    assert again.headers["Location"] == first.headers["Location"] == f"/tasks/{tid}"


def test_foreign_and_unknown_tasks_are_404_everywhere(api):
    a, b = api.agent("a"), api.agent("b")
    tid = api.call("POST", "/tasks", task_body(a["agent_id"]), token=a["token"]).data["id"]
    for method, path, body in (
        ("GET", f"/tasks/{tid}", None),
        ("PUT", f"/tasks/{tid}", {"title": "mine now"}),
        ("GET", "/tasks/00000000-0000-4000-8000-000000000000", None),
        ("GET", "/tasks/garbage", None),
    ):
        r = api.call(method, path, body, token=b["token"])
        assert r.status_code == 404, (method, path)
        assert r.headers["Content-Type"] == "application/problem+json"
    assert api.call("GET", f"/tasks/{tid}", token=a["token"]).data["title"] == "Nightly report"
    assert api.call("GET", "/tasks", token=b["token"]).data["tasks"] == []


def test_list_is_newest_first_with_filters_and_pages(api):
    agent = api.agent()
    tok = agent["token"]
    ids = []
    for i in range(7):
        kind = {"schedule_kind": "event", "schedule_expr": "order.*"} if i % 2 else {}
        ids.append(
            api.call("POST", "/tasks", task_body(agent["agent_id"], title=f"t{i}", **kind), token=tok).data["id"]
        )
    r = api.call("GET", "/tasks?limit=3", token=tok).data
    assert [t["id"] for t in r["tasks"]] == ids[::-1][:3] and r["next_offset"] == 3 and r["limit"] == 3
    r2 = api.call("GET", "/tasks?limit=3&offset=6", token=tok).data
    assert [t["id"] for t in r2["tasks"]] == [ids[0]] and r2["next_offset"] is None
    ev = api.call("GET", "/tasks?schedule_kind=event", token=tok).data["tasks"]
    assert [t["id"] for t in ev] == [ids[5], ids[3], ids[1]]
    assert api.call("GET", "/tasks?status=paused", token=tok).data["tasks"] == []
    mine = api.call("GET", f"/tasks?created_by={agent['agent_id']}", token=tok).data["tasks"]
    assert len(mine) == 7
    every = api.call("GET", "/tasks?limit=200", headers=ADMIN).data["tasks"]
    assert len(every) == 7


@pytest.mark.parametrize(
    ("qs", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("status=sleeping", "status"),
        ("schedule_kind=weekly", "schedule_kind"),
        ("created_by=nope", "created_by"),
        ("colour=red", "colour"),
    ],
)
def test_list_query_validation(api, qs, field):
    agent = api.agent()
    r = api.call("GET", f"/tasks?{qs}", token=agent["token"])
    assert r.status_code == 400 and r.data["errors"][0]["field"] == field


def test_list_for_another_agent_is_403(api):
    a, b = api.agent("a"), api.agent("b")
    assert api.call("GET", f"/tasks?created_by={b['agent_id']}", token=a["token"]).status_code == 403


def test_put_is_partial_and_revalidates_the_merged_task(api):
    agent = api.agent()
    t = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).data
    r = api.call("PUT", f"/tasks/{t['id']}", {"title": "Renamed", "priority": 1}, token=agent["token"])
    assert r.status_code == 200, r.body
    assert r.data["title"] == "Renamed" and r.data["priority"] == 1
    assert r.data["description"] == t["description"] and r.data["version"] == t["version"] + 1
    assert r.data["next_run_at"] == t["next_run_at"]
    # merged validation: a window without a key is rejected
    bad = api.call("PUT", f"/tasks/{t['id']}", {"dedupe_window_seconds": 60}, token=agent["token"])
    assert bad.status_code == 400 and bad.data["errors"][0]["field"] == "dedupe_window_seconds"
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["version"] == t["version"] + 1


def test_put_schedule_recomputes_next_run_at(api):
    agent = api.agent()
    t = api.call("POST", "/tasks", task_body(agent["agent_id"], timezone="UTC"), token=agent["token"]).data
    r = api.call("PUT", f"/tasks/{t['id']}", {"schedule_expr": "15 4 * * *"}, token=agent["token"])
    assert r.status_code == 200
    assert r.data["next_run_at"].endswith("T04:15:00Z") and t["next_run_at"].endswith("T02:30:00Z")


def test_put_if_match(api):
    agent = api.agent()
    t = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).data
    stale = api.call("PUT", f"/tasks/{t['id']}", {"title": "a"}, token=agent["token"], headers={"If-Match": '"99"'})
    assert stale.status_code == 412
    ok = api.call(
        "PUT", f"/tasks/{t['id']}", {"title": "b"}, token=agent["token"], headers={"If-Match": f'"{t["version"]}"'}
    )
    assert ok.status_code == 200
    again = api.call(
        "PUT", f"/tasks/{t['id']}", {"title": "c"}, token=agent["token"], headers={"If-Match": f'"{t["version"]}"'}
    )
    assert again.status_code == 412
    garbage = api.call(
        "PUT", f"/tasks/{t['id']}", {"title": "c"}, token=agent["token"], headers={"If-Match": "yesterday"}
    )
    assert garbage.status_code == 400


def test_put_created_by_is_immutable_and_unknown_fields_rejected(api):
    a, b = api.agent("a"), api.agent("b")
    t = api.call("POST", "/tasks", task_body(a["agent_id"]), token=a["token"]).data
    r = api.call("PUT", f"/tasks/{t['id']}", {"created_by": b["agent_id"]}, token=a["token"])
    assert r.status_code == 400 and r.data["errors"][0]["field"] == "created_by"
    r = api.call("PUT", f"/tasks/{t['id']}", {"nonsense": 1}, token=a["token"])
    assert r.status_code == 400 and r.data["errors"][0]["field"] == "nonsense"
    assert api.call("GET", f"/tasks/{t['id']}", token=a["token"]).data["version"] == t["version"]


def test_put_on_canceled_task_is_409(api):
    agent = api.agent()
    t = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).data
    boto3.client("dynamodb").update_item(
        TableName="test-tasks",
        Key={"task_id": {"S": t["id"]}},
        UpdateExpression="SET #s = :c",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":c": {"S": "canceled"}},
    )
    r = api.call("PUT", f"/tasks/{t['id']}", {"title": "x"}, token=agent["token"])
    assert r.status_code == 409 and r.headers["Content-Type"] == "application/problem+json"


def test_twenty_parallel_creates_are_all_stored(api):
    agent = api.agent()

    def create(i: int) -> int:
        return api.call("POST", "/tasks", task_body(agent["agent_id"], title=f"p{i}"), token=agent["token"]).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(create, range(20)))
    assert codes == [201] * 20
    listed = api.call("GET", "/tasks?limit=200", token=agent["token"]).data["tasks"]
    assert sorted(t["title"] for t in listed) == sorted(f"p{i}" for i in range(20))
    assert _count_items("test-tasks") == 20
    item = boto3.client("dynamodb").get_item(TableName="test-agents", Key={"agent_id": {"S": agent["agent_id"]}})[
        "Item"
    ]
    assert item["task_count"]["N"] == "20"  # the quota counter lost no increment


def test_problem_json_shape(api):
    agent = api.agent()
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], priority=42), token=agent["token"])
    assert set(r.data) >= {"type", "title", "status", "detail", "errors"}
    assert r.data["status"] == 400 and json.dumps(r.data)
    assert r.data["errors"] == [{"field": "priority", "message": r.data["errors"][0]["message"]}]
