"""AWS events in, through the `aws_events` function's handler (moto): an AWS event, as the
EventBridge rule's input transformer wraps it, starts the chosen agent's matching event tasks —
once, whatever EventBridge redelivers — and nothing of any other agent's."""

from __future__ import annotations

import json
from typing import Any

from app import aws_events
from chalicelib.services.awsevents import event_name
from tests.integration.conftest import task_body

S3_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "123456789012",
    "time": "2027-03-01T12:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:s3:::reports-bucket"],
    "detail": {"bucket": {"name": "reports-bucket"}, "object": {"key": "2027/03/01.csv", "size": 1024}},
}


def _event_task(api: Any, agent: dict[str, Any], pattern: str, title: str = "on-aws") -> str:
    body = task_body(
        agent["agent_id"],
        title=title,
        schedule_kind="event",
        schedule_expr=pattern,
        payload={"steps": [{"id": "key", "type": "log", "message": "{{ event.data.detail.object.key }}"}]},
    )
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 201, r.body
    return str(r.data["id"])


def _runs(api: Any, agent: dict[str, Any], task_id: str) -> list[dict[str, Any]]:
    r = api.call("GET", f"/tasks/{task_id}/runs", token=agent["token"])
    assert r.status_code == 200, r.body
    return list(r.data["runs"])


def test_names_follow_the_service_and_detail_type():
    assert event_name("aws.s3", "Object Created") == "aws.s3.object_created"
    assert (
        event_name("aws.codepipeline", "CodePipeline Pipeline Execution State Change")
        == "aws.codepipeline.codepipeline_pipeline_execution_state_change"
    )
    assert event_name("custom.app", "a/b") == "aws.custom.app.a_b"


def test_an_aws_event_starts_the_chosen_agents_matching_event_tasks_once(api, workers):
    # GIVEN two agents with S3 event tasks, and one of them chosen by the operator
    chosen, other = api.agent("chosen"), api.agent("other")
    s3_task = _event_task(api, chosen, "aws.s3.*")
    pipeline_task = _event_task(api, chosen, "aws.codepipeline.*", "on-pipeline")
    other_task = _event_task(api, other, "aws.*", "other-agent")
    delivery = {"agent_id": chosen["agent_id"], "event": S3_EVENT}

    # WHEN EventBridge invokes the function, and then redelivers the same event
    first = aws_events(delivery, None)
    again = aws_events(json.loads(json.dumps(delivery)), None)
    workers.drain()

    # THEN the chosen agent's S3 task ran once, with the AWS event as its `event`
    assert first["name"] == "aws.s3.object_created" and len(first["runs"]) == 1
    assert again == {"published": None, "duplicate": True}
    runs = _runs(api, chosen, s3_task)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["trigger"] == "event"
    assert runs[0]["steps"][0]["output"] == "2027/03/01.csv"
    data = runs[0]["event"]["data"]
    assert data["detail_type"] == "Object Created" and data["resources"] == ["arn:aws:s3:::reports-bucket"]
    # ... and nothing else: not the non-matching task, not another agent's
    assert _runs(api, chosen, pipeline_task) == []
    assert _runs(api, other, other_task) == []


def test_misconfiguration_is_dropped_not_retried(api):
    agent = api.agent("revoked-later")
    task = _event_task(api, agent, "aws.*")
    cases = [
        ({"agent_id": "not-a-uuid", "event": S3_EVENT}, "no_agent"),
        ({"agent_id": "00000000-0000-4000-8000-000000000000", "event": S3_EVENT}, "unknown_agent"),
        (S3_EVENT, "not_an_eventbridge_delivery"),
        ({"agent_id": agent["agent_id"], "event": {"detail": {}}}, "not_an_aws_event"),
    ]
    for payload, reason in cases:
        assert aws_events(payload, None) == {"published": None, "dropped": reason}
    assert (
        api.call(
            "POST",
            f"/agents/{agent['agent_id']}/revoke",
            headers={"Authorization": "Bearer admin-token-for-tests-only"},
        ).status_code
        == 200
    )
    revoked = aws_events({"agent_id": agent["agent_id"], "event": {**S3_EVENT, "id": "other"}}, None)
    assert revoked == {"published": None, "dropped": "agent_revoked"}
    from chalicelib.store.models import RunModel

    assert list(RunModel.query(task)) == []


def test_a_detail_over_the_event_limit_is_left_out_not_refused(api, workers):
    agent = api.agent("big")
    task = _event_task(api, agent, "aws.s3.*")
    big = {**S3_EVENT, "id": "big-1", "detail": {"blob": "x" * 70_000}}
    result = aws_events({"agent_id": agent["agent_id"], "event": big}, None)
    assert len(result["runs"]) == 1
    workers.drain()
    run = _runs(api, agent, task)[0]
    assert run["event"]["data"]["detail"] is None and run["event"]["data"]["detail_truncated"] is True
