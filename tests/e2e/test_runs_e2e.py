"""Runs on the local stack over real HTTP: a scheduled fire, a signed HTTP step, an event chain."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from chalicelib.domain.signing import verify
from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e
API_KEY = CHECKER.canary()  # a secret header of the HTTP step: it must reach the target and no log line


def _agent(stack: LocalStack) -> dict[str, Any]:
    r = requests.post(f"{stack.base_url}/agents", json={"name": "runs-e2e"}, headers=stack.admin(), timeout=10)
    assert r.status_code == 201, r.text
    CHECKER.agent(r.json())
    return r.json()


def _call(stack: LocalStack, agent: dict[str, Any], method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, stack.base_url + path, json=body, timeout=10, headers={"Authorization": f"Bearer {agent['token']}"}
    )


def _task(stack: LocalStack, agent: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"title": "e2e run", "description": "", "created_by": agent["agent_id"], **fields}
    r = _call(stack, agent, "POST", "/tasks", body)
    assert r.status_code == 201, r.text
    return r.json()


def _runs(stack: LocalStack, agent: dict[str, Any], task_id: str) -> list[dict[str, Any]]:
    return _call(stack, agent, "GET", f"/tasks/{task_id}/runs").json()["runs"]


def _until_finished(
    stack: LocalStack, agent: dict[str, Any], task_id: str, count: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(stack, agent, task_id)
        if len([r for r in runs if r["status"] in ("succeeded", "failed", "skipped")]) >= count:
            return runs
        time.sleep(0.2)
    raise AssertionError(f"runs of {task_id} did not finish: {_runs(stack, agent, task_id)}")


def test_a_once_task_runs_at_its_time_and_completes(local_stack: LocalStack) -> None:
    agent = _agent(local_stack)
    at = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    t = _task(
        local_stack,
        agent,
        schedule_kind="once",
        schedule_expr=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        payload={"steps": [{"id": "say", "type": "log", "message": "{{ task.title }}"}]},
    )
    [run] = _until_finished(local_stack, agent, t["id"])
    assert run["status"] == "succeeded" and run["trigger"] == "schedule"
    assert run["scheduled_for"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run["start_lag_ms"] >= 0  # never before its instant
    assert run["steps"][0]["output"] == "e2e run"
    got = _call(local_stack, agent, "GET", f"/tasks/{t['id']}").json()
    assert got["status"] == "completed" and got["run_count"] == 1 and got["next_run_at"] is None


class _Target(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Target.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"accepted": true}')

    def log_message(self, *args: object) -> None:
        pass


def test_run_now_http_step_is_signed_and_idempotent(local_stack: LocalStack) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        agent = _agent(local_stack)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        t = _task(
            local_stack,
            agent,
            schedule_kind="event",
            payload={
                "steps": [
                    {
                        "id": "call",
                        "type": "http",
                        "method": "POST",
                        "url": url,
                        "headers": {"X-Api-Key": API_KEY},
                        "body": {"who": "{{ input.who }}"},
                    }
                ]
            },
        )
        r = _call(local_stack, agent, "POST", f"/tasks/{t['id']}/run_now", {"input": {"who": "e2e"}})
        assert r.status_code == 202, r.text
        run_id = r.json()["run"]["id"]
        [run] = _until_finished(local_stack, agent, t["id"])
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["output"]["body"] == {"accepted": True}
        headers, body = _Target.seen[-1]
        assert json.loads(body) == {"who": "e2e"}
        assert headers["idempotency-key"] == run_id and headers["x-run-id"] == run_id
        assert headers["x-task-id"] == t["id"] and headers["x-attempt"] == "1"
        assert headers["x-api-key"] == API_KEY
        assert verify(agent["signing_secret"], headers["x-tasks-signature"], body, int(time.time()))
        assert not verify("whsec_wrong", headers["x-tasks-signature"], body, int(time.time()))
    finally:
        server.shutdown()


def test_an_event_chain_runs_over_http(local_stack: LocalStack) -> None:
    agent = _agent(local_stack)
    first = _task(
        local_stack,
        agent,
        schedule_kind="event",
        schedule_expr="order.*",
        payload={
            "steps": [
                {"id": "next", "type": "emit", "name": "invoice.requested", "data": {"order": "{{ event.data.id }}"}}
            ]
        },
    )
    second = _task(
        local_stack,
        agent,
        schedule_kind="event",
        schedule_expr="invoice.requested",
        payload={"steps": [{"id": "say", "type": "log", "message": "invoice for {{ event.data.order }}"}]},
    )
    r = _call(local_stack, agent, "POST", "/events", {"name": "order.created", "data": {"id": 42}})
    assert r.status_code == 202 and [x["task_id"] for x in r.json()["runs"]] == [first["id"]]
    [a] = _until_finished(local_stack, agent, first["id"])
    [b] = _until_finished(local_stack, agent, second["id"])
    assert a["status"] == b["status"] == "succeeded"
    assert b["steps"][0]["output"] == "invoice for 42" and b["event"]["name"] == "invoice.requested"
