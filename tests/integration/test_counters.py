"""A task's run counters are folded lazily from its run records: the worker normally writes
nothing to the task after a run, the API adds the runs not folded yet, and folds are
conditional so that nothing is ever counted twice."""

from __future__ import annotations

import threading

import boto3
import pytest

from chalicelib import counters, runs
from chalicelib.config import settings
from chalicelib.models import RunModel, TaskModel
from chalicelib.runs import RunMessage
from tests.integration.conftest import task_body
from tests.integration.harness import TableCalls, queue_url, run_records
from tests.integration.test_worker import _http_payload, target  # noqa: F401 - the fixture

HOUR = 3600
DAY = 86_400
BLOCKED = {"steps": [{"id": "meta", "type": "http", "url": "http://169.254.169.254/latest"}]}  # fails at once


def _create(api, agent, **over):
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], **{"timezone": "UTC", **over}), token=agent["token"])
    assert r.status_code == 201, r.body
    return r.data


def _run_now(api, agent, task_id):
    r = api.call("POST", f"/tasks/{task_id}/run_now", token=agent["token"])
    assert r.status_code == 202, r.body
    return r.data["run"]["id"]


def _run_several(api, agent, task_id, clock, workers, n):
    """n manual runs a second apart, then executed."""
    for _ in range(n):
        _run_now(api, agent, task_id)
        clock.advance(1)
    workers.drain()


def _get(api, agent, task_id):
    r = api.call("GET", f"/tasks/{task_id}", token=agent["token"])
    assert r.status_code == 200, r.body
    return r.data


def _counts(rep):
    return rep["run_count"], rep["failure_count"], rep["last_run_status"]


def test_counters_show_a_run_at_once_and_the_worker_writes_nothing_to_the_task(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_now(api, agent, t["id"])
    with TableCalls() as calls:
        assert workers.drain() == 1
    assert calls.writes("tasks") == 0, calls.calls
    [rec] = run_records(t["id"])
    got = _get(api, agent, t["id"])
    assert _counts(got) == (1, 0, "succeeded") and got["last_run_at"] == rec["finished_at"]
    item = TaskModel.get(t["id"])
    assert item.run_count == 0 and item.counted_through is None  # nothing folded yet: the read added it


def test_failures_are_counted_and_the_last_run_wins(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload=BLOCKED)
    _run_several(api, agent, t["id"], clock, workers, 2)
    assert _counts(_get(api, agent, t["id"])) == (2, 2, "failed")
    r = api.call("PUT", f"/tasks/{t['id']}", {"payload": task_body("x")["payload"]}, token=agent["token"])
    assert r.status_code == 200 and _counts(r.data) == (2, 2, "failed")
    clock.advance(5)
    _run_now(api, agent, t["id"])
    workers.drain()
    got = _get(api, agent, t["id"])
    assert _counts(got) == (3, 2, "succeeded") and got["last_run_at"] == "2027-03-01T12:00:07Z"


def test_skipped_runs_are_not_counted(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, dedupe_key="k")
    _run_now(api, agent, t["id"])
    _run_now(api, agent, t["id"])
    workers.drain()  # one takes the dedupe window, the other is skipped
    assert sorted(r["status"] for r in run_records(t["id"])) == ["skipped", "succeeded"]
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")
    other = _create(api, agent)
    _run_now(api, agent, other["id"])
    api.call("POST", f"/tasks/{other['id']}/cancel", token=agent["token"])
    workers.drain()
    assert [r["skip_reason"] for r in run_records(other["id"])] == ["task_canceled"]
    got = _get(api, agent, other["id"])
    assert _counts(got) == (0, 0, None) and got["last_run_at"] is None
    # folded too: skipped runs move counted_through but count nothing
    clock.advance(2 * HOUR)
    for tid in (t["id"], other["id"]):
        task = TaskModel.get(tid)
        assert counters.fold(task, clock.now)
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")
    assert _counts(_get(api, agent, other["id"])) == (0, 0, None)
    assert TaskModel.get(other["id"]).counted_through == run_records(other["id"])[0]["id"]


def test_out_of_order_completion_is_counted_once(api, clock, workers, target):  # noqa: F811
    agent = api.agent()
    t = _create(api, agent, payload=_http_payload(target.url), max_retries=2, backoff_strategy="fixed")
    first = _run_now(api, agent, t["id"])  # succeeds
    workers.drain()
    clock.advance(1)
    target.status = 500
    middle = _run_now(api, agent, t["id"])  # fails once and waits 10 s for its retry
    workers.drain()
    clock.advance(1)
    target.status = 200
    last = _run_now(api, agent, t["id"])  # succeeds while the middle one is retrying
    workers.poll_once()
    status = {r["id"]: r["status"] for r in run_records(t["id"])}
    assert status == {first: "succeeded", middle: "retrying", last: "succeeded"}
    assert _counts(_get(api, agent, t["id"])) == (2, 0, "succeeded")
    # WHEN a fold runs while the middle run is still retrying
    clock.advance(2 * HOUR)
    assert counters.fold(TaskModel.get(t["id"]), clock.now)
    # THEN it stops at the retrying run; the live view still counts the later finished one
    item = TaskModel.get(t["id"])
    assert item.counted_through == first and item.run_count == 1
    assert _counts(_get(api, agent, t["id"])) == (2, 0, "succeeded")
    # WHEN the retry succeeds and another fold runs
    workers.drain()
    assert {r["id"]: r["status"] for r in run_records(t["id"])}[middle] == "succeeded"
    assert _counts(_get(api, agent, t["id"])) == (3, 0, "succeeded")
    clock.advance(2 * HOUR)
    assert counters.fold(TaskModel.get(t["id"]), clock.now)
    # THEN every run is counted exactly once, and the last to finish is the last run
    item = TaskModel.get(t["id"])
    assert item.counted_through == last and item.run_count == 3
    got = _get(api, agent, t["id"])
    middle_rec = {r["id"]: r for r in run_records(t["id"])}[middle]
    assert _counts(got) == (3, 0, "succeeded") and got["last_run_at"] == middle_rec["finished_at"]
    assert not counters.fold(TaskModel.get(t["id"]), clock.now)  # nothing left to fold


def test_a_read_folds_once_25_runs_are_foldable(api, clock, workers):
    agent = api.agent()
    many, few = _create(api, agent, payload=BLOCKED), _create(api, agent)
    for i in range(25):
        _run_now(api, agent, many["id"])
        if i < 24:
            _run_now(api, agent, few["id"])
        clock.advance(1)
    workers.drain()
    with TableCalls() as calls:  # too recent to fold: reads only
        assert _counts(_get(api, agent, many["id"])) == (25, 25, "failed")
        assert _counts(_get(api, agent, few["id"])) == (24, 0, "succeeded")
    assert calls.writes("tasks") == 0
    clock.advance(2 * HOUR)
    with TableCalls() as calls:
        assert _counts(_get(api, agent, many["id"])) == (25, 25, "failed")
        assert _counts(_get(api, agent, few["id"])) == (24, 0, "succeeded")
    assert calls.calls[("tasks", "UpdateItem")] == 1  # the 25 are folded; the 24 are not
    item = TaskModel.get(many["id"])
    assert item.run_count == 25 and item.failure_count == 25 and item.last_run_status == "failed"
    assert item.counted_through == max(r["id"] for r in run_records(many["id"]))
    assert TaskModel.get(few["id"]).counted_through is None
    with TableCalls() as calls:
        assert _counts(_get(api, agent, many["id"])) == (25, 25, "failed")
    assert calls.writes("tasks") == 0 and calls.calls[("runs", "Query")] == 1


def test_a_read_folds_old_runs_nobody_folded(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_now(api, agent, t["id"])
    workers.drain()
    clock.advance(2 * counters.fold_interval() + 60)
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")
    assert TaskModel.get(t["id"]).run_count == 1  # a task that stopped running is folded on its next read


def test_concurrent_folds_never_double_count(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload=BLOCKED)
    _run_several(api, agent, t["id"], clock, workers, 6)
    clock.advance(2 * HOUR)
    snapshots = [TaskModel.get(t["id"]) for _ in range(8)]  # all read before any fold writes
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(counters.fold(s, clock.now))) for s in snapshots]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [False] * 7 + [True]
    item = TaskModel.get(t["id"])
    assert (item.run_count, item.failure_count) == (6, 6)
    assert _counts(_get(api, agent, t["id"])) == (6, 6, "failed")


def test_the_worker_folds_a_task_about_once_a_day(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    ids = []
    for hour in range(24):  # hourly runs for a day after the task's creation: no task writes
        ids.append(_run_now(api, agent, t["id"]))
        with TableCalls() as calls:
            workers.drain()
        assert calls.writes("tasks") == 0, (hour, calls.calls)
        clock.advance(HOUR)
    ids.append(_run_now(api, agent, t["id"]))
    with TableCalls() as calls:
        workers.drain()
    assert calls.calls[("tasks", "UpdateItem")] == 1  # a day since creation: the worker folds once
    item = TaskModel.get(t["id"])
    # everything but the run it just finished (younger than the fold horizon)
    assert item.counted_through == ids[23] and item.run_count == 24
    for _ in range(3):
        clock.advance(HOUR)
        ids.append(_run_now(api, agent, t["id"]))
        with TableCalls() as calls:
            workers.drain()
        assert calls.writes("tasks") == 0
    assert _counts(_get(api, agent, t["id"])) == (28, 0, "succeeded")
    assert TaskModel.get(t["id"]).run_count == 24


def test_the_fold_interval_stays_well_inside_the_run_retention(monkeypatch: pytest.MonkeyPatch):
    settings.cache_clear()
    assert counters.fold_interval() == DAY
    monkeypatch.setenv("TASKAPI_RUN_RETENTION_DAYS", "1")
    settings.cache_clear()
    try:
        assert counters.fold_interval() == DAY // 2
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def test_a_completed_once_task_is_folded_through_its_last_run(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    clock.advance(30)
    workers.drain()
    [rec] = run_records(t["id"])
    item = TaskModel.get(t["id"])
    assert item.status == "completed" and item.counted_through == rec["id"] and item.run_count == 1
    got = _get(api, agent, t["id"])
    assert _counts(got) == (1, 0, "succeeded") and got["status"] == "completed"


def test_a_run_written_after_a_fold_passed_its_instant_is_counted_once(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *")  # a cron task whose own fires never come here
    fire = int(clock.t) + 10
    version = TaskModel.get(t["id"]).schedule_version
    late = RunMessage(
        t["id"], runs.scheduled_run_id(t["id"], fire, version), agent["agent_id"], "schedule", fire, version
    )
    boto3.client("sqs").send_message(QueueUrl=queue_url("normal"), MessageBody=late.to_json(), DelaySeconds=900)
    clock.advance(20)
    _run_now(api, agent, t["id"])  # a later instant than the delayed fire
    workers.drain()
    clock.advance(2 * HOUR)
    assert counters.fold(TaskModel.get(t["id"]), clock.now)  # passes the fire: no record of it yet
    assert TaskModel.get(t["id"]).counted_through > late.run_id
    workers.drain()  # the fire's message arrives two hours late and runs
    assert {r["id"]: r["status"] for r in run_records(t["id"])}[late.run_id] == "succeeded"
    item = TaskModel.get(t["id"])
    assert item.run_count == 2  # counted by the worker: no fold will ever see it
    assert _counts(_get(api, agent, t["id"])) == (2, 0, "succeeded")
    clock.advance(2 * HOUR)
    counters.fold(TaskModel.get(t["id"]), clock.now)
    assert _counts(_get(api, agent, t["id"])) == (2, 0, "succeeded")


def test_list_shows_live_counters_for_every_task(api, clock, workers):
    agent = api.agent()
    ids = [_create(api, agent, title=f"t{i}", **({"payload": BLOCKED} if i % 2 else {}))["id"] for i in range(12)]
    for i, tid in enumerate(ids):
        for _ in range(i % 3):
            _run_now(api, agent, tid)
    workers.drain()
    with TableCalls() as calls:
        page = api.call("GET", "/tasks?limit=50", token=agent["token"]).data["tasks"]
    assert calls.calls[("runs", "Query")] == len(ids)
    got = {t["id"]: _counts(t) for t in page}
    for i, tid in enumerate(ids):
        n = i % 3
        assert got[tid] == (n, n if i % 2 else 0, None if n == 0 else ("failed" if i % 2 else "succeeded"))
        assert got[tid] == _counts(_get(api, agent, tid))


def test_an_update_racing_a_fold_retries_and_keeps_the_folded_counters(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_several(api, agent, t["id"], clock, workers, 3)
    clock.advance(2 * HOUR)
    client = TaskModel._get_connection().connection.client
    folded: list[bool] = []

    def fold_first(params, **_):
        if params.get("TableName", "").endswith("tasks") and not folded:
            folded.append(counters.fold(TaskModel.get(t["id"]), clock.now))  # lands between read and save

    client.meta.events.register("before-parameter-build.dynamodb.PutItem", fold_first)
    try:
        r = api.call(
            "PUT", f"/tasks/{t['id']}", {"title": "renamed"}, token=agent["token"], headers={"If-Match": '"1"'}
        )
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.PutItem", fold_first)
    assert folded == [True]
    assert r.status_code == 200 and r.data["title"] == "renamed" and r.data["version"] == 2
    assert _counts(r.data) == (3, 0, "succeeded")
    item = TaskModel.get(t["id"])
    assert item.run_count == 3 and item.counted_through == max(x["id"] for x in run_records(t["id"]))


def test_expired_run_records_are_ignored(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_now(api, agent, t["id"])
    workers.drain()
    [rec] = RunModel.query(t["id"])
    rec.update(actions=[RunModel.expires_at.set(clock.now)])  # moto never deletes TTL items
    clock.advance(1)
    assert _counts(_get(api, agent, t["id"])) == (0, 0, None)
