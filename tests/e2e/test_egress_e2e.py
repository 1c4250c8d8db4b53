"""Egress on the local stack as a user runs it (`TASKAPI_EGRESS_ALLOW=127.0.0.1`, set by the e2e
stack): an HTTP step never reaches the emulator nor the local API, a development target on another
loopback port still works, and AWS steps call only the targets the admin listed for the agent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests

from tests.e2e.test_runs_e2e import _agent, _call, _task, _until_finished
from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e
API_KEY = CHECKER.canary()  # carried by refused and allowed HTTP steps alike: never in a log line


class _Hits(BaseHTTPRequestHandler):
    count = 0

    def do_GET(self) -> None:
        _Hits.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def target() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _run_once(stack: LocalStack, agent: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    t = _task(stack, agent, schedule_kind="event", payload={"steps": [step]}, max_retries=0)
    r = _call(stack, agent, "POST", f"/tasks/{t['id']}/run_now", {})
    assert r.status_code == 202, r.text
    [run] = _until_finished(stack, agent, t["id"])
    return run


def _moto_sqs(stack: LocalStack) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=stack.moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_the_stacks_own_ports_are_never_reachable(local_stack: LocalStack, target: ThreadingHTTPServer) -> None:
    agent = _agent(local_stack)
    port = target.server_address[1]
    # GIVEN the loopback address allow-listed (operator-wide and for this agent, on its ports)
    moto_port = urlsplit(local_stack.moto_endpoint).port
    api_port = urlsplit(local_stack.base_url).port
    opened = {"http_allow": [f"127.0.0.1:{moto_port}", f"127.0.0.1:{api_port}", "localhost"]}
    r = requests.put(
        f"{local_stack.base_url}/agents/{agent['agent_id']}/egress",
        json=opened,
        headers=local_stack.admin(),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    # WHEN HTTP steps call the emulator (its reset and its state) and the local API
    for url in (
        f"{local_stack.moto_endpoint}/moto-api/reset",
        f"{local_stack.moto_endpoint}/moto-api/data.json",
        f"http://localhost:{moto_port}/moto-api/data.json",
        f"{local_stack.base_url}/health",
    ):
        method = "POST" if url.endswith("reset") else "GET"
        probe = {"id": "probe", "type": "http", "method": method, "url": url, "headers": {"X-Api-Key": API_KEY}}
        run = _run_once(local_stack, agent, probe)
        # THEN each fails egress_blocked at once, without a retry
        assert run["status"] == "failed" and run["error"]["type"] == "egress_blocked", run
        assert run["attempt"] == 1 and "belongs to the service itself" in run["error"]["message"]
    # and the emulator's state is intact (no reset went through): the agent still exists
    assert requests.get(f"{local_stack.base_url}/tasks", headers={"Authorization": f"Bearer {agent['token']}"}).ok
    # while a development target on another loopback port works
    before = _Hits.count
    dev = {
        "id": "dev",
        "type": "http",
        "method": "GET",
        "url": f"http://127.0.0.1:{port}/",
        "headers": {"X-Api-Key": API_KEY},
    }
    ok = _run_once(local_stack, agent, dev)
    assert ok["status"] == "succeeded", ok
    assert _Hits.count == before + 1


def test_aws_targets_are_allow_listed_per_agent(local_stack: LocalStack) -> None:
    sqs = _moto_sqs(local_stack)
    url = sqs.create_queue(QueueName="e2e-agent-inbox")["QueueUrl"]
    owner, other = _agent(local_stack), _agent(local_stack)
    r = requests.put(
        f"{local_stack.base_url}/agents/{owner['agent_id']}/egress",
        json={"aws_targets": [url]},
        headers=local_stack.admin(),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    mine = _call(local_stack, owner, "GET", f"/agents/{owner['agent_id']}/egress").json()
    assert mine["aws_targets"] == [url]
    step = {"id": "q", "type": "sqs", "queue_url": url, "message_body": "from {{ task.title }}"}
    assert _run_once(local_stack, owner, step)["status"] == "succeeded"
    denied = _run_once(local_stack, other, step)
    assert denied["status"] == "failed" and denied["error"]["type"] == "egress_blocked", denied
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
    assert bodies == ["from e2e run"]
