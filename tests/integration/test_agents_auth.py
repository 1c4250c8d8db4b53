"""Agents and authentication: admin-only routes, hashed tokens, immediate revocation."""

from __future__ import annotations

import hashlib

import boto3

from tests.integration.conftest import ADMIN, task_body


def test_health_and_openapi_need_no_token(api):
    assert api.call("GET", "/health").status_code == 200
    r = api.call("GET", "/openapi.json")
    assert r.status_code == 200
    assert r.data["openapi"].startswith("3.1")


def test_missing_and_unknown_tokens_are_401_problems(api):
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer tapi_zz_yy"},
        {"Authorization": "Bearer tapi_" + "0" * 32 + "_x"},
    ):
        r = api.call("GET", "/tasks", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.data["status"] == 401 and r.data["title"] == "Unauthorized"


def test_admin_creates_agent_token_shown_once_and_stored_hashed(api):
    # GIVEN the admin creates an agent
    created = api.agent("billing-bot")
    # THEN the token is a long random secret, shown once, and the table holds only its hash
    assert created["token"].startswith("tapi_") and len(created["token"]) >= 43 + 5 + 32
    assert created["signing_secret"] and created["status"] == "active"
    listed = api.call("GET", "/agents", headers=ADMIN).data["agents"]
    assert [a["agent_id"] for a in listed] == [created["agent_id"]]
    assert "token" not in listed[0] and "signing_secret" not in listed[0]
    item = boto3.client("dynamodb").get_item(TableName="test-agents", Key={"agent_id": {"S": created["agent_id"]}})[
        "Item"
    ]
    assert item["token_hash"]["S"] == hashlib.sha256(created["token"].encode()).hexdigest()
    assert created["token"] not in str(item)


def test_tokens_are_unique(api):
    tokens = {api.agent(f"a{i}")["token"] for i in range(5)}
    assert len(tokens) == 5


def test_agent_cannot_call_admin_routes(api):
    agent = api.agent()
    for method, path, body in (
        ("POST", "/agents", {"name": "x"}),
        ("GET", "/agents", None),
        ("POST", f"/agents/{agent['agent_id']}/revoke", None),
    ):
        r = api.call(method, path, body, token=agent["token"])
        assert r.status_code == 403, path
        assert r.headers["Content-Type"] == "application/problem+json"


def test_revocation_is_immediate(api):
    agent = api.agent()
    assert api.call("GET", "/tasks", token=agent["token"]).status_code == 200
    r = api.call("POST", f"/agents/{agent['agent_id']}/revoke", headers=ADMIN)
    assert r.status_code == 200 and r.data["status"] == "revoked"
    assert api.call("GET", "/tasks", token=agent["token"]).status_code == 401


def test_revoke_unknown_agent_is_404(api):
    r = api.call("POST", "/agents/00000000-0000-4000-8000-000000000000/revoke", headers=ADMIN)
    assert r.status_code == 404


def test_token_of_one_agent_with_id_of_another_is_rejected(api):
    a, b = api.agent("a"), api.agent("b")
    forged = "tapi_" + b["agent_id"].replace("-", "") + "_" + a["token"].split("_", 2)[2]
    assert api.call("GET", "/tasks", token=forged).status_code == 401


def test_create_agent_validation(api):
    for body in ({}, {"name": ""}, {"name": 5}, {"name": "x", "extra": 1}, {"name": "x" * 201}):
        r = api.call("POST", "/agents", body, headers=ADMIN)
        assert r.status_code == 400, body
        assert r.data["errors"], body


def test_admin_acts_on_any_agents_tasks(api):
    agent = api.agent()
    r = api.call("POST", "/tasks", task_body(agent["agent_id"]), headers=ADMIN)
    assert r.status_code == 201, r.body
    assert api.call("GET", f"/tasks/{r.data['id']}", token=agent["token"]).status_code == 200
    assert api.call("GET", f"/tasks/{r.data['id']}", headers=ADMIN).status_code == 200


def test_any_content_type_is_read_as_json(api):
    # curl -d sends application/x-www-form-urlencoded unless told otherwise
    r = api.call(
        "POST", "/agents", {"name": "curl"}, headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 201, r.body
    bad = api.call(
        "POST", "/agents", raw="name=curl", headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/problem+json"
