"""`tasksapi.webhooks.verify`: the service's own signer agrees with it, and a real signed HTTP
step from the local stack verifies with the agent's signing secret."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import tasksapi
from hypothesis import given
from hypothesis import strategies as st
from tasksapi import webhooks

from chalicelib.domain import signing
from tests.clients.conftest import finished
from tests.secrets_seen import CHECKER

API_KEY = CHECKER.canary()  # a secret header of the signed step: it reaches the target and no log line

SECRET = "whsec_test"


@given(body=st.binary(max_size=512), t=st.integers(min_value=0, max_value=2**40))
def test_verify_accepts_exactly_what_the_service_signs(body: bytes, t: int) -> None:
    header = signing.signature_header(SECRET, body, t)
    assert webhooks.sign(SECRET, body, t) == header
    assert webhooks.verify(SECRET, {"X-Tasks-Signature": header}, body, now=t) == t
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify(SECRET, header, body + b"x", now=t)
    with pytest.raises(webhooks.SignatureError):
        webhooks.verify("whsec_other", header, body, now=t)


def test_verify_checks_freshness_format_and_rotation() -> None:
    body = b'{"a":1}'
    header = signing.signature_header(SECRET, body, 1_000_000)
    assert webhooks.verify(SECRET, {"x-tasks-signature": header}, body, now=1_000_300) == 1_000_000
    with pytest.raises(webhooks.SignatureError, match="tolerance"):
        webhooks.verify(SECRET, header, body, now=1_000_301)
    assert webhooks.verify(SECRET, header, body, tolerance=600, now=1_000_600) == 1_000_000
    rotated = f"t=1000000,v1={'0' * 64}," + header.split(",", 1)[1]
    assert webhooks.verify(SECRET, rotated, body.decode(), now=1_000_000) == 1_000_000
    for bad in ("", "t=abc,v1=00", "v1=00", "t=1000000", "garbage"):
        with pytest.raises(webhooks.SignatureError):
            webhooks.verify(SECRET, bad, body, now=1_000_000)
    with pytest.raises(webhooks.SignatureError, match="no X-Tasks-Signature"):
        webhooks.verify(SECRET, {"Content-Type": "application/json"}, body)


class _Target(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Target.seen.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.e2e
def test_a_signed_http_step_from_the_local_stack_verifies(
    client: tasksapi.Client, agent: tasksapi.AgentCreated
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        step = {
            "id": "call",
            "type": "http",
            "method": "POST",
            "url": url,
            "headers": {"X-Api-Key": API_KEY},
            "body": {"run": "{{ run.id }}"},
        }
        task = client.tasks.create(title="signed", description="", schedule_kind="event", payload={"steps": [step]})
        run = client.tasks.run_now(task.id)
        assert finished(client, task.id, run.id).status == "succeeded"
        headers, body = _Target.seen[-1]
        assert {k.lower(): v for k, v in headers.items()}.get("x-api-key") == API_KEY
        assert webhooks.verify(agent.signing_secret, headers, body) <= int(time.time())
        with pytest.raises(webhooks.SignatureError):
            webhooks.verify("whsec_someone_else", headers, body)
    finally:
        server.shutdown()
