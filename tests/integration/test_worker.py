"""The worker: exactly one execution per run, retries with backoff, dedupe windows,
concurrency slots, and the run history routes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from chalicelib.domain import retry
from chalicelib.domain.runs import RunMessage
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.store import runs
from chalicelib.store.models import KeyModel, RunModel, TaskModel
from tests.integration.conftest import task_body
from tests.integration.harness import TableCalls, all_messages, crash_on, queue_url, run_records


def _create(api, agent, **over):
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], **{"timezone": "UTC", **over}), token=agent["token"])
    assert r.status_code == 201, r.body
    return r.data


class Target:
    """A local HTTP target that answers `status`, optionally slowly, and tracks concurrency."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        target = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with target.lock:
                    target.in_flight += 1
                    target.max_in_flight = max(target.max_in_flight, target.in_flight)
                    target.requests.append({k.lower(): v for k, v in self.headers.items()})
                time.sleep(target.delay)
                with target.lock:
                    target.in_flight -= 1
                self.send_response(target.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def target(monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.setenv("TASKAPI_EGRESS_ALLOW", "127.0.0.1")
    settings.cache_clear()
    t = Target()
    yield t
    t.server.shutdown()
    monkeypatch.delenv("TASKAPI_EGRESS_ALLOW")
    settings.cache_clear()


def _http_payload(url: str) -> dict:
    return {
        "steps": [
            {
                "id": "call",
                "type": "http",
                "method": "POST",
                "url": url,
                "body": {"run": "{{ run.id }}"},
                "timeout_seconds": 5,
            }
        ]
    }


def test_redelivery_of_a_finished_run_does_not_execute_again(api, clock, workers, target):
    agent = api.agent()
    t = _create(api, agent, payload=_http_payload(target.url))
    run = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    body = all_messages()[0]
    workers.drain()
    assert len(target.requests) == 1
    # WHEN the same message arrives again (SQS at-least-once delivery)
    boto3.client("sqs").send_message(QueueUrl=queue_url("normal"), MessageBody=json.dumps(body))
    workers.drain()
    # THEN the target is not called a second time and the run is unchanged
    assert len(target.requests) == 1
    [rec] = run_records(t["id"])
    assert rec["id"] == run["id"] and rec["status"] == "succeeded" and rec["attempt"] == 1
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["run_count"] == 1


def test_http_step_gets_stable_idempotency_key_and_signature_headers(api, clock, workers, target):
    agent = api.agent()
    t = _create(api, agent, payload=_http_payload(target.url), max_retries=2, backoff_strategy="fixed")
    target.status = 503
    run = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    workers.drain()
    target.status = 200
    clock.advance(11)  # moto makes a message visible strictly after its visibility deadline
    workers.drain()
    keys = [r["idempotency-key"] for r in target.requests]
    assert keys == [run["id"], run["id"]]
    assert [r["x-attempt"] for r in target.requests] == ["1", "2"]
    assert all(r["x-task-id"] == t["id"] and r["x-run-id"] == run["id"] for r in target.requests)
    assert all(r["x-tasks-signature"].startswith("t=") and ",v1=" in r["x-tasks-signature"] for r in target.requests)


def test_worker_crash_mid_run_completes_on_redelivery_once(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    clock.advance(30)
    undo = crash_on(RunModel._get_connection().connection.client, "before-call.dynamodb.UpdateItem")
    workers.drain()  # the worker dies while recording the outcome: the message stays
    undo()
    assert run_records(t["id"])[0]["status"] == "running"
    clock.advance(301)  # the queue's visibility timeout
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["attempt"] == 2
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["run_count"] == 1 and got["status"] == "completed"
    assert all_messages() == []


@pytest.mark.parametrize("strategy", ["fixed", "linear", "exponential_jitter"])
def test_always_failing_step_is_attempted_max_retries_plus_one_times(api, clock, workers, target, strategy):
    agent = api.agent()
    target.status = 500
    t = _create(api, agent, payload=_http_payload(target.url), max_retries=3, backoff_strategy=strategy)
    run = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    delays = []
    for attempt in range(1, 5):
        workers.drain()
        rec = api.call("GET", f"/tasks/{t['id']}/runs/{run['id']}", token=agent["token"]).data
        assert rec["attempt"] == attempt
        if attempt < 4:
            assert rec["status"] == "retrying" and rec["error"]["step"] == "call"
            wait = int(_ts(rec["next_attempt_at"]) - clock.t)
            lo, hi = retry.bounds(strategy, attempt)
            assert lo <= wait <= hi
            delays.append(wait)
            if wait > 0:
                clock.advance(wait - 1)
                assert workers.poll_once() == 0  # not before its delay
                clock.advance(2)  # moto: visible strictly after the deadline
    assert rec["status"] == "failed" and rec["next_attempt_at"] is None
    assert len(target.requests) == 4
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["failure_count"] == 1 and got["last_run_status"] == "failed"


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_non_retryable_failure_fails_at_once(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload={"steps": [{"id": "meta", "type": "http", "url": "http://169.254.169.254/latest"}]})
    run = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    workers.drain()
    rec = api.call("GET", f"/tasks/{t['id']}/runs/{run['id']}", token=agent["token"]).data
    assert rec["status"] == "failed" and rec["attempt"] == 1 and rec["error"]["type"] == "egress_blocked"


def test_dedupe_within_and_after_the_window(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, dedupe_key="nightly", dedupe_window_seconds=600)
    first = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    second = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    workers.drain()
    # the two runs execute concurrently in one batch: exactly one takes the window
    outcomes = sorted(
        (r["status"], r["skip_reason"]) for r in run_records(t["id"]) if r["id"] in (first["id"], second["id"])
    )
    assert outcomes == [("skipped", "deduplicated"), ("succeeded", None)]
    clock.advance(601)
    third = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]
    workers.drain()
    assert {r["id"]: r for r in run_records(t["id"])}[third["id"]]["status"] == "succeeded"


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_limit_under_parallel_workers(api, clock, workers, target, limit):
    agent = api.agent()
    target.delay = 0.4
    t = _create(api, agent, payload=_http_payload(target.url), concurrency_key="crm", concurrency_limit=limit)
    for _ in range(6):
        api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    for _ in range(40):
        threads = [threading.Thread(target=workers.poll_once, kwargs={"max_messages": 1}) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if sum(r["status"] == "succeeded" for r in run_records(t["id"])) == 6:
            break
        clock.advance(2)
    assert target.max_in_flight == limit
    recs = run_records(t["id"])
    assert len(recs) == 6 and all(r["status"] == "succeeded" and r["attempt"] == 1 for r in recs)


def test_a_crashed_workers_slot_frees_itself(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, concurrency_key="crm", concurrency_limit=1)
    KeyModel(f"conc#{agent['agent_id']}#crm#0", holder="dead-run", until=int(clock.t) - 1).save()
    api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    workers.drain()
    assert [r["status"] for r in run_records(t["id"])] == ["succeeded"]


def test_run_history_is_newest_first_with_a_cursor(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    ids = []
    for _ in range(5):
        ids.append(api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).data["run"]["id"])
        clock.advance(1)
    workers.drain()
    page = api.call("GET", f"/tasks/{t['id']}/runs?limit=2", token=agent["token"]).data
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2] and page["next_cursor"]
    rest = api.call("GET", f"/tasks/{t['id']}/runs?limit=10&cursor={page['next_cursor']}", token=agent["token"]).data
    assert [r["id"] for r in rest["runs"]] == ids[::-1][2:] and rest["next_cursor"] is None
    other = api.agent("other")
    assert api.call("GET", f"/tasks/{t['id']}/runs", token=other["token"]).status_code == 404
    assert api.call("GET", f"/tasks/{t['id']}/runs/{ids[0]}", token=other["token"]).status_code == 404
    assert api.call("GET", f"/tasks/{t['id']}/runs/nope", token=agent["token"]).status_code == 404
    assert api.call("GET", f"/tasks/{t['id']}/runs?cursor=%%%", token=agent["token"]).status_code == 400
    assert api.call("GET", f"/tasks/{t['id']}/runs?limit=0", token=agent["token"]).status_code == 400


def test_undecodable_message_goes_to_the_dlq_with_a_reason(api, clock, workers):
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=queue_url("normal"), MessageBody="{not json")
    workers.drain()
    dlq = sqs.receive_message(QueueUrl=queue_url("normal") + "-dlq", MessageAttributeNames=["All"])["Messages"]
    assert dlq[0]["Body"] == "{not json" and "undecodable" in dlq[0]["MessageAttributes"]["reason"]["StringValue"]
    assert wiring.queue_url("normal") == queue_url("normal")


def test_a_duplicate_of_a_running_run_does_not_free_its_concurrency_slot(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, concurrency_key="crm", concurrency_limit=1)
    api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    [body] = all_messages()
    # GIVEN the run is executing elsewhere: it holds slot 0 and a live claim
    slot_key = f"conc#{agent['agent_id']}#crm#0"
    KeyModel(slot_key, holder=body["run_id"], until=int(clock.t) + 300).save()
    rec = RunModel.get(t["id"], body["run_id"])
    rec.update(actions=[RunModel.status.set("running"), RunModel.lease_until.set(int(clock.t) + 300)])
    # WHEN a duplicate copy of its message is delivered
    workers.drain()
    # THEN the copy backs off and the running copy keeps its slot
    assert KeyModel.get(slot_key).holder == body["run_id"]
    assert RunModel.get(t["id"], body["run_id"]).status == "running"


def test_snooze_does_not_supersede_a_retry_of_an_earlier_fire(api, clock, workers, target):
    agent = api.agent()
    target.status = 500
    t = _create(
        api,
        agent,
        schedule_expr="*/10 * * * *",
        payload=_http_payload(target.url),
        max_retries=2,
        backoff_strategy="fixed",
    )
    clock.advance(9 * 60 + 30)
    from chalicelib import dispatch

    dispatch.run_tick(wiring.now_precise())
    clock.advance(30)  # 12:10:00: the run fails once and waits 10 s for its retry
    workers.drain()
    first = run_records(t["id"])[0]
    assert first["status"] == "retrying"
    # WHEN the agent snoozes the next execution (12:20) by ten minutes
    r = api.call("POST", f"/tasks/{t['id']}/snooze", {"delay_seconds": 600}, token=agent["token"])
    assert r.status_code == 200 and r.data["next_run_at"] == "2027-03-01T12:30:00Z"
    # THEN the 12:10 run's retry still happens
    target.status = 200
    clock.advance(11)
    workers.drain()
    again = {r["id"]: r for r in run_records(t["id"])}[first["id"]]
    assert again["status"] == "succeeded" and again["attempt"] == 2


def test_a_once_task_whose_only_run_is_deduplicated_completes(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z", dedupe_key="k")
    api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    workers.drain()  # the run_now takes the dedupe window
    clock.advance(30)
    workers.drain()
    reasons = sorted(str(r["skip_reason"]) for r in run_records(t["id"]))
    assert reasons == ["None", "deduplicated"]
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["status"] == "completed"


def test_a_copy_of_a_running_run_never_overwrites_it(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    [body] = all_messages()
    rec = RunModel.get(t["id"], body["run_id"])
    rec.update(actions=[RunModel.status.set("running"), RunModel.lease_until.set(int(clock.t) + 300)])
    api.call("POST", f"/tasks/{t['id']}/cancel", token=agent["token"])
    workers.drain()  # the copy would be skipped as task_canceled, but the run is executing elsewhere
    assert RunModel.get(t["id"], body["run_id"]).status == "running"
    assert all_messages() == []


# ---- claim first: a scheduled fire's first delivery goes straight to the conditional Put ----


def _fire_message(task_id: str, agent_id: str, fire: int) -> RunMessage:
    version = TaskModel.get(task_id).schedule_version
    return RunMessage(task_id, runs.scheduled_run_id(task_id, fire, version), agent_id, "schedule", fire, version)


def _send(msg: RunMessage) -> None:
    boto3.client("sqs").send_message(QueueUrl=queue_url("normal"), MessageBody=msg.to_json())


def test_a_scheduled_run_is_claimed_without_reading_its_record(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *")
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    _send(msg)
    with TableCalls() as calls:
        assert workers.drain() == 1
    assert calls.calls[("runs", "GetItem")] == 0, calls.calls
    assert calls.calls[("runs", "PutItem")] == 1 and calls.calls[("runs", "UpdateItem")] == 1
    # the task: an eventually consistent read before the claim, a consistent one after it (runs.md)
    assert calls.calls[("tasks", "GetItem")] == 2 and calls.writes("tasks") == 0
    [rec] = run_records(t["id"])
    assert rec["id"] == msg.run_id and rec["status"] == "succeeded" and rec["attempt"] == 1
    # WHEN a copy arrives as a first delivery (a repeated tick): the failed Put reads the record
    _send(msg)
    with TableCalls() as calls:
        workers.drain()
    assert calls.calls[("runs", "GetItem")] == 1 and calls.calls[("runs", "UpdateItem")] == 0
    [again] = run_records(t["id"])
    assert again == rec and all_messages() == []


def test_a_finished_run_is_not_overwritten_by_a_skip(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *")
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    _send(msg)
    workers.drain()
    api.call("POST", f"/tasks/{t['id']}/pause", token=agent["token"])
    _send(msg)  # a copy of the finished run, now under a paused task and a stale version
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["skip_reason"] is None


def test_a_fresh_copy_of_a_running_scheduled_run_keeps_its_slot(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *", concurrency_key="crm", concurrency_limit=1)
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    slot_key = f"conc#{agent['agent_id']}#crm#0"
    KeyModel(slot_key, holder=msg.run_id, until=int(clock.t) + 300).save()
    doc = runs.new_doc(msg, status="queued", max_attempts=4, now=clock.now)
    runs.put_new(msg, {**doc, "status": "running", "attempt": 1}, clock.now)
    RunModel(t["id"], msg.run_id).update(
        actions=[RunModel.status.set("running"), RunModel.lease_until.set(int(clock.t) + 300)]
    )
    _send(msg)
    workers.drain()
    assert KeyModel.get(slot_key).holder == msg.run_id
    rec = RunModel.get(t["id"], msg.run_id)
    assert rec.status == "running" and rec.doc["attempt"] == 1
    assert all_messages() == []  # in_progress: the copy is dropped, the running copy records the outcome


def _claimed_elsewhere(api, clock, *, lease_left: int):
    """A task whose fire is already claimed by another worker, its lease ending `lease_left` s from now."""
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *")
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    doc = runs.new_doc(msg, status="queued", max_attempts=4, now=clock.now)
    runs.put_new(msg, {**doc, "status": "running", "attempt": 1}, clock.now)
    RunModel(t["id"], msg.run_id).update(
        actions=[RunModel.status.set("running"), RunModel.lease_until.set(int(clock.t) + lease_left)]
    )
    return agent, t, msg


def test_a_fresh_copy_takes_over_a_run_whose_claim_expired(api, clock, workers):
    agent, t, msg = _claimed_elsewhere(api, clock, lease_left=-1)
    _send(msg)
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["attempt"] == 2
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["run_count"] == 1


def test_a_scheduled_run_waiting_for_a_slot_is_recorded_queued(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="0 0 1 1 *", concurrency_key="crm", concurrency_limit=1)
    slot_key = f"conc#{agent['agent_id']}#crm#0"
    KeyModel(slot_key, holder="another-run", until=int(clock.t) + 300).save()
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    _send(msg)
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "queued" and rec["attempt"] == 0  # a wait is not an attempt
    KeyModel(slot_key).delete()
    clock.advance(3)
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["attempt"] == 1
    assert KeyModel.count(slot_key) == 0  # released after the run


def test_a_retry_under_a_changed_schedule_is_superseded(api, clock, workers, target):
    """The rule kept from before claim-first: a run between attempts (`retrying`) whose schedule
    version went stale (schedule change, pause, cancel) is skipped; only a run executing under
    a live lease is left alone."""
    agent = api.agent()
    target.status = 500
    t = _create(api, agent, schedule_expr="0 0 1 1 *", payload=_http_payload(target.url), backoff_strategy="fixed")
    msg = _fire_message(t["id"], agent["agent_id"], int(clock.t))
    _send(msg)
    workers.drain()
    assert run_records(t["id"])[0]["status"] == "retrying"
    r = api.call("PUT", f"/tasks/{t['id']}", {"schedule_expr": "0 0 2 1 *"}, token=agent["token"])
    assert r.status_code == 200
    clock.advance(11)
    workers.drain()
    [rec] = run_records(t["id"])
    assert (rec["status"], rec["skip_reason"], rec["attempt"]) == ("skipped", "superseded", 1)
    assert len(target.requests) == 1
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["run_count"] == 0


def test_a_fresh_copy_of_a_running_scheduled_run_is_not_skipped_over_it(api, clock, workers):
    agent, t, msg = _claimed_elsewhere(api, clock, lease_left=300)
    api.call("POST", f"/tasks/{t['id']}/pause", token=agent["token"])
    _send(msg)  # a first delivery of a copy: the task is paused, but the run is executing elsewhere
    workers.drain()
    assert RunModel.get(t["id"], msg.run_id).status == "running"
    assert all_messages() == []
