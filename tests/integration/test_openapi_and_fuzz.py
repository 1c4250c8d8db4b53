"""The served OpenAPI document is valid and matches the routes; arbitrary input never
yields a 5xx."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from tests.integration.conftest import task_body


def test_openapi_document_is_valid_3_1_and_lists_every_route(api):
    doc = api.call("GET", "/openapi.json").data
    validate(doc)
    from app import app

    # The web console's static files (/console, docs/console.md) are not part of the API.
    served = {(p, m.lower()) for p, methods in app.routes.items() for m in methods if not p.startswith("/console")}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    create = doc["components"]["schemas"]["TaskCreate"]
    assert set(create["required"]) >= {"title", "description", "schedule_kind", "payload", "created_by"}
    assert create["additionalProperties"] is False
    assert create["properties"]["priority"]["maximum"] == 9


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = list(task_body("00000000-0000-4000-8000-000000000000"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_yields_a_5xx_or_a_partial_write(api, data):
    agent = getattr(test_no_input_yields_a_5xx_or_a_partial_write, "_agent", None)
    if agent is None:
        agent = api.agent()
        test_no_input_yields_a_5xx_or_a_partial_write._agent = agent  # type: ignore[attr-defined]
    body = task_body(agent["agent_id"])
    for field in data.draw(st.lists(st.sampled_from([*FIELDS, "junk"]), max_size=3)):
        body[field] = data.draw(json_values)
    raw = data.draw(st.sampled_from([json.dumps(body), json.dumps(body)[:-3], "", "[]"]))
    r = api.call("POST", "/tasks", raw=raw or " ", token=agent["token"])
    assert r.status_code < 500, (raw, r.body)
    if r.status_code >= 400:
        assert r.headers["Content-Type"] == "application/problem+json"
    tid = (r.data or {}).get("id") if r.status_code == 201 else None
    path = f"/tasks/{tid}" if tid else "/tasks/00000000-0000-4000-8000-000000000000"
    patch = {k: data.draw(json_values) for k in data.draw(st.lists(st.sampled_from(FIELDS), max_size=2))}
    r2 = api.call("PUT", path, patch, token=agent["token"])
    assert r2.status_code < 500, (patch, r2.body)
    q = data.draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz=&0123456789-", max_size=20))
    assert api.call("GET", f"/tasks?{q}", token=agent["token"]).status_code < 500


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_body_on_the_other_routes_yields_a_5xx(api, data):
    holder = test_no_body_on_the_other_routes_yields_a_5xx
    if not hasattr(holder, "_ctx"):
        agent = api.agent()
        task = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).data
        holder._ctx = (agent, task["id"])  # type: ignore[attr-defined]
    agent, tid = holder._ctx  # type: ignore[attr-defined]
    method, path = data.draw(
        st.sampled_from(
            [
                ("POST", "/events"),
                ("POST", f"/tasks/{tid}/snooze"),
                ("POST", f"/tasks/{tid}/run_now"),
                ("POST", "/schedules/preview"),
                ("POST", "/agents"),
                ("POST", f"/tasks/{tid}/pause"),
                ("POST", f"/tasks/{tid}/resume"),
            ]
        )
    )
    body = data.draw(
        json_values
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "data",
                    "delay_seconds",
                    "reason",
                    "input",
                    "schedule_kind",
                    "schedule_expr",
                    "timezone",
                    "count",
                    "after",
                    "jitter_seconds",
                    "starts_at",
                    "ends_at",
                ]
            ),
            json_values,
            max_size=5,
        )
    )
    r = api.call(method, path, body, token=agent["token"])
    assert r.status_code < 500, (method, path, body, r.body)
    q = data.draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz=&0123456789-:TZ", max_size=30))
    for p in (f"/tasks/{tid}/preview?{q}", f"/tasks/{tid}/runs?{q}"):
        assert api.call("GET", p, token=agent["token"]).status_code < 500, p
