"""Events: pattern matching, isolation, paused/canceled/snoozed tasks, emit chains, the
loop guard, and a cost that follows matching tasks, not stored ones."""

from __future__ import annotations

import pytest

from chalicelib.platform.config import settings
from chalicelib.services.events import candidate_patterns
from tests.integration.conftest import task_body
from tests.integration.harness import RequestCounter, run_records


def _event_task(api, agent, pattern, **over):
    over.setdefault("payload", {"steps": [{"id": "s", "type": "log", "message": "{{ event.name }}"}]})
    r = api.call(
        "POST",
        "/tasks",
        task_body(agent["agent_id"], schedule_kind="event", schedule_expr=pattern, **over),
        token=agent["token"],
    )
    assert r.status_code == 201, r.body
    return r.data


def _post(api, agent, name, data=None):
    return api.call("POST", "/events", {"name": name, "data": data or {}}, token=agent["token"])


@pytest.mark.parametrize(
    ("pattern", "name", "match"),
    [
        ("order.created", "order.created", True),
        ("order.created", "order.updated", False),
        ("order.*", "order.created", True),
        ("order.*", "order.created.v2", True),
        ("order.*", "order", False),
        ("order.*", "orders.created", False),
        ("*", "anything.at.all", True),
        ("a.b.*", "a.b.c", True),
        ("a.b.*", "a.c.b", False),
    ],
)
def test_pattern_matching_table(api, clock, pattern, name, match):
    agent = api.agent()
    t = _event_task(api, agent, pattern)
    r = _post(api, agent, name)
    assert r.status_code == 202, r.body
    assert ([x["task_id"] for x in r.data["runs"]] == [t["id"]]) is match
    assert (pattern in candidate_patterns(name)) is match


def test_event_runs_see_the_event_and_are_stored(api, clock, workers):
    agent = api.agent()
    t = _event_task(api, agent, "order.*")
    r = _post(api, agent, "order.created", {"id": 42})
    workers.drain()
    [run] = run_records(t["id"])
    assert run["trigger"] == "event" and run["status"] == "succeeded"
    assert run["event"]["name"] == "order.created" and run["event"]["data"] == {"id": 42}
    assert run["event"]["id"] == r.data["event_id"] and run["steps"][0]["output"] == "order.created"


def test_events_never_cross_agents(api, clock):
    a, b = api.agent("a"), api.agent("b")
    _event_task(api, a, "*")
    assert _post(api, b, "order.created").data["runs"] == []


def test_paused_and_canceled_tasks_do_not_run_snoozed_ones_wait(api, clock, workers):
    agent = api.agent()
    paused = _event_task(api, agent, "x.*", title="paused")
    canceled = _event_task(api, agent, "x.*", title="canceled")
    snoozed = _event_task(api, agent, "x.*", title="snoozed")
    api.call("POST", f"/tasks/{paused['id']}/pause", token=agent["token"])
    api.call("POST", f"/tasks/{canceled['id']}/cancel", token=agent["token"])
    s = api.call("POST", f"/tasks/{snoozed['id']}/snooze", {"delay_seconds": 120}, token=agent["token"])
    assert s.status_code == 200, s.body
    r = _post(api, agent, "x.y")
    assert [x["task_id"] for x in r.data["runs"]] == [snoozed["id"]]
    workers.drain()
    assert run_records(snoozed["id"]) and run_records(snoozed["id"])[0]["status"] == "queued"
    clock.advance(120)
    workers.drain()
    [run] = run_records(snoozed["id"])
    assert run["status"] == "succeeded" and run["started_at"] == "2027-03-01T12:02:00Z"


def test_emit_chains_three_tasks(api, clock, workers):
    agent = api.agent()
    first = _event_task(
        api,
        agent,
        "chain.start",
        payload={"steps": [{"id": "e", "type": "emit", "name": "chain.middle", "data": {"n": "{{ event.data.n }}"}}]},
    )
    middle = _event_task(
        api,
        agent,
        "chain.middle",
        payload={"steps": [{"id": "e", "type": "emit", "name": "chain.end", "data": {"n": "{{ event.data.n }}"}}]},
    )
    last = _event_task(api, agent, "chain.end")
    _post(api, agent, "chain.start", {"n": 7})
    for _ in range(5):
        workers.drain()
    for t in (first, middle, last):
        [run] = run_records(t["id"])
        assert run["status"] == "succeeded", run
    assert run_records(last["id"])[0]["event"]["data"] == {"n": 7}


def test_emit_loop_is_stopped_by_the_depth_limit(api, clock, workers):
    agent = api.agent()
    loop = _event_task(
        api,
        agent,
        "loop.tick",
        max_retries=0,
        payload={"steps": [{"id": "again", "type": "emit", "name": "loop.tick"}]},
    )
    _post(api, agent, "loop.tick")
    for _ in range(20):
        if workers.drain() == 0:
            break
    recs = run_records(loop["id"])
    failed = [r for r in recs if r["status"] == "failed"]
    # the POSTed event starts depth 0; depths 1…10 are emitted; the emit to depth 11 is refused
    assert len(recs) == 11 and len(failed) == 1
    assert failed[0]["error"]["type"] == "chain_too_deep" and "deeper than 10" in failed[0]["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "has space"},
        {"name": "x" * 257},
        {"name": "ok", "data": []},
        {"data": {}},
        {"name": "ok", "extra": 1},
    ],
)
def test_event_validation(api, clock, body):
    agent = api.agent()
    r = api.call("POST", "/events", body, token=agent["token"])
    assert r.status_code == 400 and r.data["errors"]


def test_event_data_over_64_kib_is_413(api, clock):
    agent = api.agent()
    assert _post(api, agent, "big", {"x": "y" * 70_000}).status_code == 413


def test_event_cost_is_flat_in_stored_tasks(api, clock):
    agent = api.agent()
    _event_task(api, agent, "order.created")
    _post(api, agent, "order.created")  # warm the queue-URL cache so both counts see the same path
    with RequestCounter() as few:
        _post(api, agent, "order.created")
    for i in range(60):
        _event_task(api, agent, f"other{i}.*")
    with RequestCounter() as many:
        assert len(_post(api, agent, "order.created").data["runs"]) == 1
    assert many.total == few.total, (few.calls, many.calls)


def test_an_emit_retried_with_its_run_starts_its_listeners_once(api, clock, workers, monkeypatch):
    from chalicelib.platform.config import settings

    monkeypatch.setenv("TASKAPI_EGRESS_ALLOW", "127.0.0.1")
    settings.cache_clear()
    try:
        agent = api.agent()
        # emit, then a step that fails retryably (nothing listens on port 9): three attempts.
        emitter = _event_task(
            api,
            agent,
            "go",
            max_retries=2,
            payload={
                "steps": [
                    {"id": "tell", "type": "emit", "name": "x.done", "data": {"k": 1}},
                    {"id": "call", "type": "http", "method": "GET", "url": "http://127.0.0.1:9/", "timeout_seconds": 2},
                ]
            },
        )
        listener = _event_task(api, agent, "x.done")
        _post(api, agent, "go")
        for _ in range(6):
            workers.drain()
            clock.advance(3600)
        [run] = run_records(emitter["id"])
        assert run["status"] == "failed" and run["attempt"] == 3, run
        # Each attempt re-published the same event: one listener run, not three.
        listened = run_records(listener["id"])
        assert len(listened) == 1 and listened[0]["status"] == "succeeded"
        assert {s["output"]["event_id"] for s in [run["steps"][0]]} == {listened[0]["event"]["id"]}
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def test_an_event_posted_by_a_runs_http_step_continues_its_chain(api, clock):
    agent = api.agent()
    _event_task(api, agent, "deep")
    ok = api.call("POST", "/events", {"name": "deep"}, token=agent["token"], headers={"X-Tasks-Event-Depth": "9"})
    assert ok.status_code == 202 and len(ok.data["runs"]) == 1
    too_deep = api.call(
        "POST", "/events", {"name": "deep"}, token=agent["token"], headers={"X-Tasks-Event-Depth": "10"}
    )
    assert too_deep.status_code == 400 and too_deep.data["errors"][0]["field"] == "X-Tasks-Event-Depth"
    bad = api.call("POST", "/events", {"name": "deep"}, token=agent["token"], headers={"X-Tasks-Event-Depth": "²"})
    assert bad.status_code == 400


def test_an_event_posted_by_a_runs_http_step_counts_against_its_chain(api, clock, monkeypatch):
    monkeypatch.setenv("TASKAPI_EVENT_CHAIN_MAX_RUNS", "2")
    settings.cache_clear()
    try:
        agent = api.agent()
        _event_task(api, agent, "wide")
        root = api.call("POST", "/events", {"name": "wide"}, token=agent["token"])
        assert root.status_code == 202  # the chain's first event: its fan-out is not counted
        step = {"X-Tasks-Event-Depth": "1", "X-Tasks-Event-Chain": root.data["event_id"]}
        for _ in range(2):
            ok = api.call("POST", "/events", {"name": "wide"}, token=agent["token"], headers=step)
            assert ok.status_code == 202 and len(ok.data["runs"]) == 1
        over = api.call("POST", "/events", {"name": "wide"}, token=agent["token"], headers=step)
        assert over.status_code == 400 and over.data["errors"][0]["field"] == "X-Tasks-Event-Chain"
        assert "more than 2 runs" in over.data["detail"]
        bad = api.call("POST", "/events", {"name": "wide"}, token=agent["token"], headers={"X-Tasks-Event-Chain": "x"})
        assert bad.status_code == 400 and bad.data["errors"][0]["field"] == "X-Tasks-Event-Chain"
    finally:
        monkeypatch.delenv("TASKAPI_EVENT_CHAIN_MAX_RUNS")
        settings.cache_clear()
