"""Egress scoped per agent: the admin sets an agent's AWS targets and HTTP allow entries
(`PUT /agents/{agent_id}/egress`), and the worker holds each agent's runs to its own lists."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from chalicelib.platform.config import settings
from tests.integration.conftest import ADMIN, task_body
from tests.integration.harness import run_records


def _egress(api: Any, agent_id: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return api.call("PUT", f"/agents/{agent_id}/egress", body, headers=ADMIN if headers is None else headers)


def _run(api: Any, agent: dict[str, Any], workers: Any, steps: list[dict[str, Any]]) -> dict[str, Any]:
    body = task_body(agent["agent_id"], timezone="UTC", payload={"steps": steps}, max_retries=0)
    t = api.call("POST", "/tasks", body, token=agent["token"]).data
    r = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    assert r.status_code == 202, r.body
    workers.drain()
    [rec] = run_records(t["id"])
    return rec


def test_admin_sets_and_reads_an_agents_egress(api):
    agent, other = api.agent("a"), api.agent("b")
    aid = agent["agent_id"]
    # GIVEN a new agent: nothing opened
    empty = {"agent_id": aid, "aws_targets": [], "http_allow": []}
    assert api.call("GET", f"/agents/{aid}/egress", headers=ADMIN).data == empty
    # WHEN the admin sets both lists
    body = {
        "aws_targets": ["arn:aws:sns:us-east-1:123456789012:agent-a-*", "default"],
        "http_allow": ["10.0.0.0/8:443", "internal.example:8443", "[fd00::/8]:443", "*.svc.example"],
    }
    r = _egress(api, aid, body)
    assert r.status_code == 200, r.body
    assert r.data == {"agent_id": aid, **body}
    # THEN the admin and the agent itself read them; another agent may not
    assert api.call("GET", f"/agents/{aid}/egress", headers=ADMIN).data == r.data
    assert api.call("GET", f"/agents/{aid}/egress", token=agent["token"]).data == r.data
    assert api.call("GET", f"/agents/{aid}/egress", token=other["token"]).status_code == 403
    # and a PUT replaces both lists (an omitted one becomes empty)
    assert _egress(api, aid, {"http_allow": ["127.0.0.1:9"]}).data == {
        "agent_id": aid,
        "aws_targets": [],
        "http_allow": ["127.0.0.1:9"],
    }


def test_only_the_admin_sets_egress(api):
    agent = api.agent()
    r = _egress(api, agent["agent_id"], {"aws_targets": ["*"]}, headers={"Authorization": f"Bearer {agent['token']}"})
    assert r.status_code == 403 and r.headers["Content-Type"] == "application/problem+json"
    assert api.call("GET", f"/agents/{agent['agent_id']}/egress", headers=ADMIN).data["aws_targets"] == []


def test_unknown_agents_are_404(api):
    for aid in ("0b7e1c5e-8d2a-4c55-9f11-2a1e6f6c0d01", "not-a-uuid", "x" * 3000):
        assert _egress(api, aid, {}).status_code == 404, aid
        assert api.call("GET", f"/agents/{aid}/egress", headers=ADMIN).status_code == 404, aid


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"http_allow": ["127.0.0.1:9", "host:99999"]}, "http_allow[1]"),
        ({"http_allow": ["http://example.com/"]}, "http_allow[0]"),
        ({"http_allow": [""]}, "http_allow[0]"),
        ({"http_allow": "127.0.0.1"}, "http_allow"),
        ({"aws_targets": ["has space"]}, "aws_targets[0]"),
        ({"aws_targets": ["x" * 2049]}, "aws_targets[0]"),
        ({"aws_targets": [f"q{i}" for i in range(101)]}, "aws_targets"),
        ({"aws_targets": [7]}, "aws_targets[0]"),
        ({"extra": []}, "extra"),
    ],
)
def test_malformed_egress_is_a_400_naming_the_field(api, body, field):
    agent = api.agent()
    r = _egress(api, agent["agent_id"], body)
    assert r.status_code == 400, r.body
    assert field in [e["field"] for e in r.data["errors"]], r.data


def test_aws_targets_are_per_agent(api, clock, workers):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="agent-a-inbox")["QueueUrl"]
    a, b = api.agent("a"), api.agent("b")
    assert _egress(api, a["agent_id"], {"aws_targets": [url]}).status_code == 200
    step = [{"id": "q", "type": "sqs", "queue_url": url, "message_body": "hello"}]
    # agent A may send to its queue; agent B, with the same step, may not
    assert _run(api, a, workers, step)["status"] == "succeeded"
    denied = _run(api, b, workers, step)
    assert denied["status"] == "failed" and denied["error"]["type"] == "egress_blocked", denied
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 1
    # WHEN the admin narrows A's list THEN its next run is refused too
    assert _egress(api, a["agent_id"], {"aws_targets": []}).status_code == 200
    again = _run(api, a, workers, step)
    assert again["status"] == "failed" and again["error"]["type"] == "egress_blocked"


class _Target:
    def __init__(self) -> None:
        self.hits = 0
        target = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def target(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Target]:
    monkeypatch.delenv("TASKAPI_EGRESS_ALLOW", raising=False)  # no operator-wide opening
    settings.cache_clear()
    t = _Target()
    yield t
    t.server.shutdown()
    settings.cache_clear()


def test_http_allow_is_per_agent(api, clock, workers, target):
    a, b = api.agent("a"), api.agent("b")
    assert _egress(api, a["agent_id"], {"http_allow": [f"127.0.0.1:{target.port}"]}).status_code == 200
    assert _egress(api, b["agent_id"], {"http_allow": [f"127.0.0.1:{target.port + 1}"]}).status_code == 200
    step = [{"id": "h", "type": "http", "url": f"http://127.0.0.1:{target.port}/hook", "timeout_seconds": 5}]
    assert _run(api, a, workers, step)["status"] == "succeeded"
    denied = _run(api, b, workers, step)
    assert denied["status"] == "failed" and denied["error"]["type"] == "egress_blocked", denied
    assert target.hits == 1
