"""The tick's dead-letter sweep on moto (the DLQs of infra/resources.json): a run whose message
was dead-lettered ends `failed` / `dead_lettered`, and the message leaves the DLQ; a tick with
nothing dead-lettered makes one ReceiveMessage per DLQ."""

from __future__ import annotations

import json

import boto3

from tests.integration.conftest import task_body
from tests.integration.harness import RequestCounter, queue_url, run_records, tick


def _dlq_messages(band: str) -> list[dict]:
    return (
        boto3.client("sqs")
        .receive_message(QueueUrl=queue_url(band) + "-dlq", MaxNumberOfMessages=10)
        .get("Messages", [])
    )


def test_a_dead_lettered_run_is_failed_by_the_next_tick_and_its_message_deleted(api, clock, workers):
    agent = api.agent()
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], timezone="UTC"), token=agent["token"])
    assert r.status_code == 201, r.body
    t = r.data
    run = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    assert run.status_code in (200, 201, 202), run.body
    sqs = boto3.client("sqs")
    # GIVEN the run's message moved to the DLQ (what SQS does at maxReceiveCount), the run queued
    [m] = sqs.receive_message(QueueUrl=queue_url("normal"), MaxNumberOfMessages=10)["Messages"]
    sqs.send_message(QueueUrl=queue_url("normal") + "-dlq", MessageBody=m["Body"])
    sqs.delete_message(QueueUrl=queue_url("normal"), ReceiptHandle=m["ReceiptHandle"])
    run_id = json.loads(m["Body"])["run_id"]
    [before] = [d for d in run_records(t["id"]) if d["id"] == run_id]
    assert before["status"] == "queued"
    # WHEN the tick runs
    report = tick(clock)
    # THEN the run is failed, said why, and the DLQ is empty
    assert report.dead_lettered == 1
    [after] = [d for d in run_records(t["id"]) if d["id"] == run_id]
    assert after["status"] == "failed" and after["error"]["type"] == "dead_lettered", after
    assert "maxReceiveCount" in after["error"]["message"]
    assert _dlq_messages("normal") == []
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["failure_count"] == 1, got


def test_an_empty_sweep_costs_three_requests_a_tick(api, clock):
    with RequestCounter() as calls:
        assert tick(clock).dead_lettered == 0
    assert calls.calls.get("sqs.ReceiveMessage") == 3, calls.calls
    assert calls.calls.get("sqs.DeleteMessage", 0) == 0
