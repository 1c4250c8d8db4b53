"""The local stack over real HTTP: what an agent sees, and that the tick loop and the SQS pollers
are alive behind the API."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
import requests

from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

PIPELINE = {"steps": [{"id": "a", "type": "log", "message": "hi"}]}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create_agent(stack: LocalStack, name: str) -> dict[str, Any]:
    r = requests.post(f"{stack.base_url}/agents", json={"name": name}, headers=stack.admin(), timeout=10)
    assert r.status_code == 201, r.text
    CHECKER.agent(r.json())
    return r.json()


def _task_body(agent_id: str) -> dict[str, Any]:
    return {
        "title": "e2e",
        "description": "created by the e2e suite",
        "schedule_kind": "cron",
        "schedule_expr": "*/5 * * * *",
        "payload": PIPELINE,
        "created_by": agent_id,
    }


def _wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture(scope="module")
def agent(local_stack: LocalStack) -> dict[str, Any]:
    return _create_agent(local_stack, "e2e")


@pytest.fixture(scope="module")
def created(local_stack: LocalStack, agent: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{local_stack.base_url}/tasks", json=_task_body(agent["agent_id"]), headers=_bearer(agent["token"]), timeout=10
    )


# ---- the API -------------------------------------------------------------------------------


def test_health_answers_without_auth(local_stack: LocalStack) -> None:
    r = requests.get(f"{local_stack.base_url}/health", timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_openapi_document_is_served(local_stack: LocalStack) -> None:
    r = requests.get(f"{local_stack.base_url}/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert str(doc["openapi"]).startswith("3.")
    assert "/tasks" in doc["paths"]


def test_admin_creates_an_agent_with_a_token(agent: dict[str, Any]) -> None:
    assert agent["name"] == "e2e"
    assert agent["token"] and agent["signing_secret"]
    assert agent["agent_id"]


def test_agent_creates_a_task(created: requests.Response, agent: dict[str, Any]) -> None:
    assert created.status_code == 201, created.text
    task = created.json()
    assert created.headers["Location"] == f"/tasks/{task['id']}"
    assert task["created_by"] == agent["agent_id"]
    assert task["schedule_kind"] == "cron"
    assert task["status"] == "active"


def test_agent_reads_its_task(local_stack: LocalStack, agent: dict[str, Any], created: requests.Response) -> None:
    task_id = created.json()["id"]
    r = requests.get(f"{local_stack.base_url}/tasks/{task_id}", headers=_bearer(agent["token"]), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == task_id
    assert r.json()["payload"] == PIPELINE


def test_agent_lists_its_task(local_stack: LocalStack, agent: dict[str, Any], created: requests.Response) -> None:
    r = requests.get(f"{local_stack.base_url}/tasks", headers=_bearer(agent["token"]), timeout=10)
    assert r.status_code == 200, r.text
    assert created.json()["id"] in [t["id"] for t in r.json()["tasks"]]


def test_no_token_is_401_problem_json(local_stack: LocalStack, created: requests.Response) -> None:
    r = requests.get(f"{local_stack.base_url}/tasks/{created.json()['id']}", timeout=10)
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 401


def test_another_agent_gets_404(local_stack: LocalStack, created: requests.Response) -> None:
    other = _create_agent(local_stack, "e2e-other")
    r = requests.get(
        f"{local_stack.base_url}/tasks/{created.json()['id']}", headers=_bearer(other["token"]), timeout=10
    )
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")


def test_revoked_token_is_401_on_the_next_request(local_stack: LocalStack) -> None:
    # GIVEN an agent whose token works
    doomed = _create_agent(local_stack, "e2e-revoked")
    url = f"{local_stack.base_url}/tasks"
    assert requests.get(url, headers=_bearer(doomed["token"]), timeout=10).status_code == 200
    # WHEN the admin revokes it
    r = requests.post(
        f"{local_stack.base_url}/agents/{doomed['agent_id']}/revoke", headers=local_stack.admin(), timeout=10
    )
    assert r.status_code == 200, r.text
    # THEN the very next request with that token is refused
    r = requests.get(url, headers=_bearer(doomed["token"]), timeout=10)
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")


# ---- behind the API: the tick loop and the pollers -----------------------------------------


def test_tick_loop_calls_the_scheduled_handler(local_stack: LocalStack) -> None:
    period = local_stack.tick_seconds

    def ticks() -> list[dict[str, Any]]:  # the runtime's own events, not the app's "tick" log
        return [t for t in local_stack.events("tick") if t.get("service") == "tasks-api-local"]

    seen = len(ticks())
    assert _wait_for(lambda: len(ticks()) >= seen + 2, timeout=4 * period + 5), local_stack.output()
    assert not local_stack.events("tick_failed"), local_stack.output()
    # After the first (at start), ticks fall half a period past wall-clock multiples of the period.
    later = ticks()[1:]
    assert all(
        (time.strptime(t["scheduled_for"], "%Y-%m-%dT%H:%M:%SZ").tm_sec - period // 2) % period == 0 for t in later
    )
    assert all("result" in t for t in later)


def test_pollers_consume_a_message_from_the_high_queue(local_stack: LocalStack) -> None:
    # GIVEN a message sent straight to the high band's queue (as the tick would)
    sqs = boto3.client(
        "sqs",
        endpoint_url=local_stack.moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.get_queue_url(QueueName="tasksapi-e2e-runs-high")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"probe": True}))["MessageId"]

    def left_the_queue() -> bool:
        attrs = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        return sum(int(v) for v in attrs["Attributes"].values()) == 0

    # THEN a poller hands it to the worker within a few seconds and, the worker reporting no
    # failure for it, deletes it (what the worker made of a probe is not this test's business)
    assert _wait_for(left_the_queue, timeout=10), f"message {sent} still queued\n{local_stack.output()}"
    assert [b for b in local_stack.events("worker_batch") if b.get("band") == "high"], local_stack.output()


# ---- the events the handlers get (shape checked against Powertools' Lambda event models) ---


def test_sqs_event_has_lambdas_shape() -> None:
    from aws_lambda_powertools.utilities.parser.models import SqsModel

    from local.events import sqs_event

    message = {
        "MessageId": "5fea7756-0ea4-451a-a703-a558b933e274",
        "ReceiptHandle": "AQEB-receipt",
        "MD5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "Body": '{"probe": true}',
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "MD5OfMessageAttributes": "abc",
        "MessageAttributes": {
            "reason": {"DataType": "String", "StringValue": "x"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    }
    arn = "arn:aws:sqs:us-east-1:123456789012:tasksapi-e2e-runs-high"
    event = sqs_event([message], arn, "us-east-1")
    parsed = SqsModel.model_validate(event)
    record = parsed.Records[0]
    assert record.messageId == message["MessageId"] and record.receiptHandle == message["ReceiptHandle"]
    assert record.eventSource == "aws:sqs" and record.eventSourceARN == arn and record.awsRegion == "us-east-1"
    assert record.messageAttributes["reason"].stringValue == "x"
    assert record.messageAttributes["blob"].binaryValue == "AAE="
    assert event["Records"][0]["attributes"] == message["Attributes"]


def test_scheduled_event_has_eventbridges_shape() -> None:
    from datetime import UTC, datetime

    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    from local.events import rule_arn, scheduled_event

    event = scheduled_event(
        datetime(2027, 3, 28, 0, 1, tzinfo=UTC), rule_arn("tasks-api-local-tick", "us-east-1"), "us-east-1"
    )
    parsed = EventBridgeModel.model_validate(event)
    assert parsed.detail_type == "Scheduled Event" and parsed.source == "aws.events"
    assert event["time"] == "2027-03-28T00:01:00Z"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/tasks-api-local-tick"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, None),  # not in the batch: all failed
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"id": "b"}]}, None),
        ("not an object", None),
    ],
)
def test_partial_batch_response_follows_lambda(response: Any, expected: set[str] | None) -> None:
    from local.events import failed_ids

    assert failed_ids(response, ["a", "b"]) == expected
