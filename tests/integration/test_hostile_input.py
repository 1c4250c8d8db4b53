"""Hostile and careless input (issue: no tenant's input can break the service): every case
answers a 4xx problem+json naming the field, and changes nothing."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.domain.validation import MAX_JSON_DEPTH, scrub
from tests.integration.conftest import task_body


def _field_error(r, status: int = 400) -> list[str]:
    assert r.status_code == status, r.body
    assert r.headers["Content-Type"] == "application/problem+json"
    return [e["field"] for e in r.data.get("errors", [])]


def _task(api):
    agent = api.agent()
    t = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"])
    assert t.status_code == 201, t.body
    return agent, t.data


@pytest.mark.parametrize("value", ['"²"', '"' + "9" * 5000 + '"', '"-1"', '"1.5"', '"٣"', "W/"])
def test_if_match_that_is_not_a_version_is_a_400_naming_it(api, value):
    agent, t = _task(api)
    r = api.call("PUT", f"/tasks/{t['id']}", {"priority": 2}, token=agent["token"], headers={"If-Match": value})
    assert _field_error(r) == ["If-Match"]
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["priority"] == 5


def test_if_match_star_matches_any_version(api):
    agent, t = _task(api)
    r = api.call("PUT", f"/tasks/{t['id']}", {"priority": 2}, token=agent["token"], headers={"If-Match": "*"})
    assert r.status_code == 200 and r.data["priority"] == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000,
        json.dumps({"r": "x" * 2000}).encode(),
        json.dumps({"r": "\u00e9t\u00e9"}).encode(),
        json.dumps({"r": 5}).encode(),
        b"\xff\xfe",
    ],
)
def test_a_cursor_we_did_not_make_is_a_400_naming_it(api, raw):
    agent, t = _task(api)
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    r = api.call("GET", f"/tasks/{t['id']}/runs?cursor={cursor}", token=agent["token"])
    assert _field_error(r) == ["cursor"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"input": {"x": "\\ud800"}}', "input.x"),
        ('{"input": {"x": NaN}}', "input.x"),
        ('{"input": {"x": [1, -Infinity]}}', "input.x[1]"),
        ('{"input": {"x": 1e999}}', "input.x"),
        ('{"input": {"\\udc00": 1}}', "input.?"),
    ],
)
def test_run_now_input_that_json_cannot_carry_is_a_400_and_the_history_stays_readable(api, raw, field):
    agent, t = _task(api)
    r = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"], raw=raw)
    assert _field_error(r) == [field]
    runs = api.call("GET", f"/tasks/{t['id']}/runs", token=agent["token"])
    assert runs.status_code == 200 and runs.data["runs"] == []


def test_event_data_with_an_overflowing_number_is_a_400(api):
    agent = api.agent()
    r = api.call("POST", "/events", token=agent["token"], raw='{"name": "order.created", "data": {"total": 1e999}}')
    assert _field_error(r) == ["data.total"]


def test_nesting_past_the_documented_depth_is_a_400_naming_where(api):
    agent = api.agent()
    deep: object = "leaf"
    for _ in range(480):
        deep = [deep]
    body = task_body(agent["agent_id"], payload={"steps": [{"id": "say", "type": "log", "message": deep}]})
    r = api.call("POST", "/tasks", body, token=agent["token"])
    (field,) = _field_error(r)
    assert field.startswith("payload.steps[0].message[0]")
    assert api.call("GET", "/tasks", token=agent["token"]).data["tasks"] == []


def test_nesting_just_inside_the_depth_is_accepted(api):
    agent = api.agent()
    # The body is depth 0; payload, steps, the step, then `message` start at depth 4.
    deep: object = "leaf"
    for _ in range(MAX_JSON_DEPTH - 4):
        deep = [deep]
    body = task_body(agent["agent_id"], payload={"steps": [{"id": "say", "type": "log", "message": deep}]})
    assert api.call("POST", "/tasks", body, token=agent["token"]).status_code == 201


def test_size_limits_count_the_stored_escaped_form(api):
    # 20,000 snowmen are 60 KB as UTF-8 but 120 KB as stored (each one is \u2603): over 64 KiB.
    agent, t = _task(api)
    snowmen = "\u2603" * 20_000
    body = task_body(agent["agent_id"], payload={"steps": [{"id": "say", "type": "log", "message": snowmen}]})
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert _field_error(r, 413) == ["payload"]
    r = api.call("POST", f"/tasks/{t['id']}/run_now", {"input": {"s": snowmen}}, token=agent["token"])
    assert _field_error(r, 413) == ["input"]
    r = api.call("POST", "/events", {"name": "x", "data": {"s": snowmen}}, token=agent["token"])
    assert _field_error(r, 413) == ["data"]
    assert api.call("GET", f"/tasks/{t['id']}/runs", token=agent["token"]).data["runs"] == []


def test_what_a_target_answers_is_scrubbed_before_it_is_stored():
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    out = scrub({"n": float("nan"), "i": float("inf"), "s": "a\ud800b", "\udfffk": 1, "d": deep})
    assert out["n"] == "nan" and out["i"] == "inf" and out["s"] == "a\ufffdb" and out["\ufffdk"] == 1
    json.dumps(out, ensure_ascii=False, allow_nan=False).encode("utf-8")  # raises if anything is left
    depth, v = 0, out["d"]
    while isinstance(v, list):
        depth, v = depth + 1, v[0]
    assert depth < MAX_JSON_DEPTH and isinstance(v, str)
