"""Pause, resume, cancel, snooze and run_now: allowed transitions, 409s, idempotence,
fencing of runs already dispatched, and no lost update under races."""

from __future__ import annotations

import threading

import pytest

from tests.integration.conftest import task_body
from tests.integration.harness import all_messages, run_records, tick


def _create(api, agent, **over):
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], **{"timezone": "UTC", **over}), token=agent["token"])
    assert r.status_code == 201, r.body
    return r.data


def _do(api, agent, tid, action, body=None):
    return api.call("POST", f"/tasks/{tid}/{action}", body, token=agent["token"])


def test_pause_resume_cancel_table(api, clock):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 * * * *")
    # pause: active → paused; again → 200 (idempotent); next_run_at null while paused
    p = _do(api, agent, t["id"], "pause")
    assert p.status_code == 200 and p.data["status"] == "paused" and p.data["next_run_at"] is None
    assert _do(api, agent, t["id"], "pause").status_code == 200
    assert _do(api, agent, t["id"], "snooze", {"delay_seconds": 60}).status_code == 409
    # resume: recomputed from now
    clock.advance(3 * 3600 + 10)
    r = _do(api, agent, t["id"], "resume")
    assert r.status_code == 200 and r.data["status"] == "active" and r.data["next_run_at"] == "2027-03-01T16:00:00Z"
    assert _do(api, agent, t["id"], "resume").status_code == 200
    # cancel: from anything; idempotent; every later mutation 409
    c = _do(api, agent, t["id"], "cancel")
    assert c.status_code == 200 and c.data["status"] == "canceled" and c.data["next_run_at"] is None
    assert _do(api, agent, t["id"], "cancel").status_code == 200
    for action, body in (("pause", None), ("resume", None), ("snooze", {"delay_seconds": 5}), ("run_now", None)):
        r = _do(api, agent, t["id"], action, body)
        assert r.status_code == 409, action
        assert r.headers["Content-Type"] == "application/problem+json"
    assert api.call("PUT", f"/tasks/{t['id']}", {"title": "x"}, token=agent["token"]).status_code == 409


def test_lifecycle_routes_are_tenant_isolated(api, clock):
    a, b = api.agent("a"), api.agent("b")
    t = _create(api, a)
    for action in ("pause", "resume", "cancel", "run_now"):
        assert _do(api, b, t["id"], action).status_code == 404
    assert _do(api, b, t["id"], "snooze", {"delay_seconds": 5}).status_code == 404
    assert api.call("GET", f"/tasks/{t['id']}", token=a["token"]).data["status"] == "active"


@pytest.mark.parametrize(
    "body",
    [{}, {"delay_seconds": 0}, {"delay_seconds": 604801}, {"delay_seconds": "5"}, {"delay_seconds": 5, "why": "x"}],
)
def test_snooze_validation(api, clock, body):
    agent = api.agent()
    t = _create(api, agent)
    r = _do(api, agent, t["id"], "snooze", body)
    assert r.status_code == 400 and r.data["errors"]


def test_snooze_moves_the_next_execution_and_keeps_the_cadence(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 * * * *")  # next 13:00
    s = _do(api, agent, t["id"], "snooze", {"delay_seconds": 1800, "reason": "maintenance"})
    assert s.status_code == 200
    assert s.data["next_run_at"] == "2027-03-01T13:30:00Z"
    assert s.data["snoozed_until"] == "2027-03-01T13:30:00Z" and s.data["snooze_reason"] == "maintenance"
    clock.advance(3600 + 1740)  # 13:29, the tick
    tick(clock)
    clock.advance(60)
    workers.drain()
    [run] = run_records(t["id"])
    assert run["scheduled_for"] == "2027-03-01T13:30:00Z" and run["status"] == "succeeded"
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["next_run_at"] == "2027-03-01T14:00:00Z"


def test_once_task_snoozed_after_dispatch_runs_once_at_its_new_time(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:40Z")
    assert len(all_messages()) == 1  # dispatched on write
    assert _do(api, agent, t["id"], "snooze", {"delay_seconds": 30}).data["next_run_at"] == "2027-03-01T12:01:10Z"
    clock.advance(40)
    workers.drain()
    recs = run_records(t["id"])
    assert [r["skip_reason"] for r in recs] == ["superseded"]
    clock.advance(30)
    workers.drain()
    recs = sorted(run_records(t["id"]), key=lambda r: r["scheduled_for"])
    assert [(r["status"], r["scheduled_for"]) for r in recs] == [
        ("skipped", "2027-03-01T12:00:40Z"),
        ("succeeded", "2027-03-01T12:01:10Z"),
    ]
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["status"] == "completed"


def test_snoozing_a_running_every_minute_schedule_skips_the_fires_it_moves(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="* * * * *")  # 12:01 and 12:02 go out on write
    clock.advance(30)
    tick(clock)  # 12:12:00 horizon: nothing new; the 12:03 entry waits in the due table
    # WHEN it is snoozed 5 minutes at 12:00:30: 12:01 → 12:06, cadence after that unchanged
    s = _do(api, agent, t["id"], "snooze", {"delay_seconds": 300})
    assert s.data["next_run_at"] == "2027-03-01T12:06:00Z"
    for _ in range(9):  # until 12:09:30, a tick a minute
        clock.advance(60)
        tick(clock)
        workers.drain()
    recs = sorted(run_records(t["id"]), key=lambda r: r["scheduled_for"])
    got = [(r["scheduled_for"][11:16], r["status"]) for r in recs]
    # THEN the fires that may already be queued (12:01, 12:02, and 12:03 which a dispatch-on-write
    # at 12:00:30 could have sent) are recorded superseded; 12:04 and 12:05 never run
    assert got == [
        ("12:01", "skipped"),
        ("12:02", "skipped"),
        ("12:03", "skipped"),
        ("12:06", "succeeded"),
        ("12:07", "succeeded"),
        ("12:08", "succeeded"),
        ("12:09", "succeeded"),
    ]
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["next_run_at"] == "2027-03-01T12:10:00Z"


def test_pause_skips_runs_already_dispatched(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    _do(api, agent, t["id"], "pause")
    clock.advance(30)
    workers.drain()
    [run] = run_records(t["id"])
    assert run["status"] == "skipped" and run["skip_reason"] == "task_paused"


def test_cancel_skips_pending_runs_including_run_now(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    run = _do(api, agent, t["id"], "run_now", {"input": {"x": 1}}).data["run"]
    _do(api, agent, t["id"], "cancel")
    clock.advance(30)
    workers.drain()
    reasons = sorted(r["skip_reason"] for r in run_records(t["id"]))
    assert reasons == ["task_canceled", "task_canceled"]
    assert run["status"] == "queued"


def test_run_now_runs_once_outside_the_schedule_with_input(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload={"steps": [{"id": "echo", "type": "log", "message": "{{ input.who }}"}]})
    r = _do(api, agent, t["id"], "run_now", {"input": {"who": "agent-7"}})
    assert r.status_code == 202 and r.data["run"]["trigger"] == "run_now" and r.data["run"]["status"] == "queued"
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["next_run_at"] == t["next_run_at"]
    workers.drain()
    got = api.call("GET", f"/tasks/{t['id']}/runs/{r.data['run']['id']}", token=agent["token"]).data
    assert got["status"] == "succeeded" and got["input"] == {"who": "agent-7"}
    assert got["steps"][0]["output"] == "agent-7"
    # allowed while paused, too
    _do(api, agent, t["id"], "pause")
    assert _do(api, agent, t["id"], "run_now").status_code == 202
    assert _do(api, agent, t["id"], "run_now", {"input": "not an object"}).status_code == 400


def test_racing_pause_and_cancel_never_lose_an_update(api, clock):
    agent = api.agent()
    for _ in range(3):
        t = _create(api, agent)
        barrier = threading.Barrier(3)
        codes: list[int] = []

        def act(action: str, tid: str, barrier: threading.Barrier, codes: list[int]) -> None:
            barrier.wait()
            codes.append(_do(api, agent, tid, action).status_code)

        threads = [
            threading.Thread(target=act, args=(a, t["id"], barrier, codes)) for a in ("pause", "cancel", "pause")
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        final = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
        # cancel always wins in the end: a pause after it is a 409, never an overwrite
        assert final["status"] == "canceled", codes
        assert codes.count(200) >= 1 and set(codes) <= {200, 409}


def test_preview_routes(api, clock):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="30 2 * * *", timezone="Europe/Chisinau")
    r = api.call("GET", f"/tasks/{t['id']}/preview?count=3&after=2027-03-27T00:00:00Z", token=agent["token"])
    assert r.status_code == 200, r.body
    # 02:30 local does not exist on 2027-03-28 (02:00 → 03:00): that day fires at 03:00 EEST
    assert r.data["next_runs"] == ["2027-03-27T00:30:00Z", "2027-03-28T00:00:00Z", "2027-03-28T23:30:00Z"]
    assert r.data["description"]
    p = api.call(
        "POST",
        "/schedules/preview",
        {"schedule_kind": "cron", "schedule_expr": "0 9 * * MON", "count": 2, "after": "2027-03-01T00:00:00Z"},
        token=agent["token"],
    )
    assert p.status_code == 200 and p.data["next_runs"] == ["2027-03-01T09:00:00Z", "2027-03-08T09:00:00Z"]
    for bad in (
        {"schedule_kind": "cron", "schedule_expr": "0 25 * * *"},
        {"schedule_kind": "cron"},
        {"schedule_kind": "cron", "schedule_expr": "* * * * *", "count": 0},
        {"schedule_kind": "cron", "schedule_expr": "* * * * *", "after": "soon"},
    ):
        b = api.call("POST", "/schedules/preview", bad, token=agent["token"])
        assert b.status_code == 400 and b.data["errors"], bad
    assert api.call("GET", f"/tasks/{t['id']}/preview?count=101", token=agent["token"]).status_code == 400
