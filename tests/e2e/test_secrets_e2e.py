"""Secrets on the local stack: the emulator's agents table holds only ciphertext, signatures verify
with the secret shown at creation, and the stack's whole output (every log line of the API, the
tick and the pollers) never shows a token, a signing secret, a header value or a response body."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests

from chalicelib.domain.signing import verify
from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

# Also checked against every log line of the session (tests/secrets_seen.py).
API_KEY = CHECKER.secret("X-Api-Key header value", "sk_live_" + secrets.token_hex(16))
PASSWORD = CHECKER.secret("request body password", "pw-" + secrets.token_hex(12))
RESPONSE_TOKEN = CHECKER.secret("response body token", "rt-" + secrets.token_hex(12))
TENANT = CHECKER.secret("X-Tenant response header value", "t-" + secrets.token_hex(8))


class _Target(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        _Target.seen.append((headers, body))
        answer = json.dumps({"echo": headers.get("x-api-key"), "token": RESPONSE_TOKEN}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Tenant", TENANT)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *a: object) -> None:
        pass


def test_no_secret_header_value_or_body_reaches_the_stacks_output(local_stack: LocalStack) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = requests.post(f"{local_stack.base_url}/agents", json={"name": "secrets"}, headers=local_stack.admin())
        assert r.status_code == 201, r.text
        agent = r.json()
        CHECKER.agent(agent)
        auth = {"Authorization": f"Bearer {agent['token']}"}
        url = f"http://127.0.0.1:{server.server_port}/hook"
        steps = [
            {
                "id": "call",
                "type": "http",
                "method": "POST",
                "url": url,
                "headers": {"X-Api-Key": API_KEY},
                "body": {"user": "ana", "password": PASSWORD},
            },
            {"id": "note", "type": "log", "message": "key {{ steps.call.output.body.echo }} {{ steps.call.output }}"},
            {"id": "tenant", "type": "http", "url": 'http://{{ steps.call.output.headers."x-tenant" }}.invalid/'},
        ]
        body = {
            "title": "secrets e2e",
            "description": "",
            "created_by": agent["agent_id"],
            "schedule_kind": "event",
            "max_retries": 1,
            "backoff_strategy": "fixed",
            "payload": {"steps": steps},
        }
        t = requests.post(f"{local_stack.base_url}/tasks", json=body, headers=auth, timeout=10)
        assert t.status_code == 201, t.text
        task_id = t.json()["id"]
        ran = requests.post(f"{local_stack.base_url}/tasks/{task_id}/run_now", json={}, headers=auth, timeout=10)
        assert ran.status_code == 202, ran.text
        deadline = time.monotonic() + 60
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            runs = requests.get(f"{local_stack.base_url}/tasks/{task_id}/runs", headers=auth, timeout=10).json()["runs"]
            run = runs[0] if runs else {}
            if run.get("status") in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        # Both attempts ran, with the values flowing through the worker.
        assert run.get("status") == "failed" and run["attempt"] == 2, run
        assert API_KEY in run["steps"][1]["output"] and TENANT in run["steps"][2]["error"]["message"], run
        headers, sent = _Target.seen[-1]
        assert headers["x-api-key"] == API_KEY and PASSWORD.encode() in sent
        assert verify(agent["signing_secret"], headers["x-tasks-signature"], sent, int(time.time()))

        # The emulator's copy of the agent: ciphertext only.
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=local_stack.moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="e2e",
            aws_secret_access_key="e2e",
        )
        item = ddb.get_item(TableName="tasksapi-e2e-agents", Key={"agent_id": {"S": agent["agent_id"]}})["Item"]
        assert item["signing_secret"]["S"].startswith("kms1:")
        assert agent["signing_secret"] not in json.dumps(item)

        time.sleep(1)  # the last lines of the run reach the output
        output = local_stack.output()
        assert local_stack.events("run_retrying"), "the output holds the worker's lines"
        for name, value in {
            "token": agent["token"],
            "signing secret": agent["signing_secret"],
            "X-Api-Key value": API_KEY,
            "body password": PASSWORD,
            "response token": RESPONSE_TOKEN,
            "X-Tenant value": TENANT,
        }.items():
            assert value not in output, f"the {name} is in the local stack's output"
    finally:
        server.shutdown()
        server.server_close()
