"""Secrets: signing secrets are KMS ciphertext at rest, bound to their agent, decrypted by the
worker at most once per cache period; and no token, signing secret, header value or response
body a run handles reaches the operator log (the log records, and what the logger prints).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.domain.signing import verify
from chalicelib.execution.pipeline import RunContext, run_pipeline
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.services import agents
from chalicelib.store.models import AgentModel
from tests.integration.conftest import task_body
from tests.integration.harness import run_records

# Values a real run would carry, each recognisable wherever it lands.
API_KEY = "sk_live_" + secrets.token_hex(16)  # a header the task sends
PASSWORD = "pw-" + secrets.token_hex(12)  # in the body the task sends
RESPONSE_TOKEN = "rt-" + secrets.token_hex(12)  # in the body the target answers
TENANT = "t-" + secrets.token_hex(8)  # a header the target answers, used in a later step's URL


class Target:
    """Answers JSON echoing the request's X-Api-Key, with a token of its own and X-Tenant."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        target = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                target.requests.append((headers, body))
                answer = json.dumps({"echo": headers.get("x-api-key"), "token": RESPONSE_TOKEN}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Tenant", TENANT)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

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
    t.server.server_close()
    monkeypatch.delenv("TASKAPI_EGRESS_ALLOW")
    settings.cache_clear()


@pytest.fixture()
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture everything the service's logger emits, DEBUG included, and every other library's
    INFO and above (botocore's DEBUG wire dumps are off wherever the service runs)."""
    level = logger.log_level
    logger.setLevel("DEBUG")
    caplog.set_level(logging.INFO)
    yield caplog
    logger.setLevel(level)


def _logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """All captured log output: each record with every attribute (extra fields included) and its
    exception text, plus what the logger's handlers printed."""
    parts = [caplog.text]
    for r in caplog.records:
        parts.append(json.dumps({k: v for k, v in vars(r).items() if k != "exc_info"}, default=str))
        if r.exc_info and r.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(r.exc_info))
    out = capsys.readouterr()
    return "\n".join([*parts, out.out, out.err])


def _stored_agent(agent_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=settings().table("agents"), Key={"agent_id": {"S": agent_id}})
    return dict(item["Item"])


def _flow_payload(url: str) -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": "call",
                "type": "http",
                "method": "POST",
                "url": url,
                "headers": {"X-Api-Key": API_KEY},
                "body": {"user": "ana", "password": PASSWORD},
                "timeout_seconds": 5,
            },
            {
                "id": "note",
                "type": "log",
                "message": "key {{ steps.call.output.body.echo }} answered {{ to_string(steps.call.output.body) }}",
            },
            {
                # Fails with an error whose text holds the X-Tenant value (a name that cannot resolve).
                "id": "tenant",
                "type": "http",
                "method": "POST",
                "url": 'http://{{ steps.call.output.headers."x-tenant" }}.invalid/hook',
                "headers": {"X-Api-Key": API_KEY},
                "timeout_seconds": 5,
            },
        ]
    }


# ---- at rest --------------------------------------------------------------------------------


def test_the_stored_agent_holds_only_ciphertext_bound_to_its_agent(api: Any) -> None:
    agent = api.agent("at-rest")
    secret = agent["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    stored = _stored_agent(agent["agent_id"])
    raw = json.dumps(stored)
    assert secret not in raw and secret.removeprefix("whsec_") not in raw and agent["token"] not in raw
    sealed = stored["signing_secret"]["S"]
    assert sealed.startswith(agents.SEALED_PREFIX)
    # The worker's read gives back the secret shown at creation.
    assert agents.open_secret(agent["agent_id"], sealed) == secret
    # A ciphertext copied into another agent's item does not decrypt there.
    other = api.agent("other")
    with pytest.raises(ClientError) as e:
        agents.open_secret(other["agent_id"], sealed)
    assert e.value.response["Error"]["Code"] == "InvalidCiphertextException"


def test_signatures_verify_with_the_secret_shown_at_creation_and_decrypts_are_cached(
    api: Any, clock: Any, workers: Any, target: Target
) -> None:
    agent = api.agent("signer")
    agents.forget_secrets()
    decrypts: list[str] = []
    kms = wiring.client("kms")
    kms.meta.events.register("before-call.kms.Decrypt", lambda **kw: decrypts.append("d"))
    payload = {"steps": [{"id": "call", "type": "http", "method": "POST", "url": target.url, "body": {"n": 1}}]}
    t = api.call("POST", "/tasks", task_body(agent["agent_id"], payload=payload), token=agent["token"]).data
    for _ in range(3):
        assert api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"]).status_code == 202
        workers.drain()
    assert len(target.requests) == 3
    for headers, body in target.requests:
        assert verify(agent["signing_secret"], headers["x-tasks-signature"], body, int(clock.t))
        assert not verify("whsec_" + "x" * 43, headers["x-tasks-signature"], body, int(clock.t))
    assert len(decrypts) == 1, "three runs of one agent: one kms:Decrypt in this container"


def test_a_legacy_plaintext_secret_still_signs_and_is_sealed_on_the_agents_next_request(
    api: Any, clock: Any, workers: Any, target: Target
) -> None:
    agent = api.agent("legacy")
    legacy = "whsec_" + secrets.token_urlsafe(32)
    # An item as written before secrets were encrypted.
    AgentModel(agent["agent_id"]).update(actions=[AgentModel.signing_secret.set(legacy)])
    agents.forget_secrets()
    payload = {"steps": [{"id": "call", "type": "http", "method": "POST", "url": target.url, "body": {"n": 1}}]}
    created = api.call("POST", "/tasks", task_body(agent["agent_id"], payload=payload), token=agent["token"])
    assert created.status_code == 201
    # That request was the agent's: the API sealed the stored secret, unchanged.
    sealed = _stored_agent(agent["agent_id"])["signing_secret"]["S"]
    assert sealed.startswith(agents.SEALED_PREFIX) and legacy not in sealed
    assert agents.open_secret(agent["agent_id"], sealed) == legacy
    # The worker reads a plaintext item as it is (here: one it read before the API sealed it).
    assert agents.open_secret(agent["agent_id"], legacy) == legacy
    assert api.call("POST", f"/tasks/{created.data['id']}/run_now", token=agent["token"]).status_code == 202
    workers.drain()
    [(headers, body)] = target.requests
    assert verify(legacy, headers["x-tasks-signature"], body, int(clock.t))


# ---- the operator log -----------------------------------------------------------------------


def test_a_realistic_flow_leaves_no_token_secret_header_value_or_body_in_any_log_line(
    api: Any, clock: Any, workers: Any, target: Target, every_log_line: Any, capsys: Any
) -> None:
    agent = api.agent("leaky")
    token, secret = agent["token"], agent["signing_secret"]
    agents.forget_secrets()
    body = task_body(agent["agent_id"], payload=_flow_payload(target.url), max_retries=1, backoff_strategy="fixed")
    t = api.call("POST", "/tasks", body, token=token)
    assert t.status_code == 201, t.body
    assert api.call("POST", f"/tasks/{t.data['id']}/run_now", token=token).status_code == 202
    workers.drain()
    clock.advance(61)  # past the fixed backoff: the second (last) attempt
    workers.drain()

    # The flow ran as intended, so the values did pass through the worker:
    [rec] = run_records(t.data["id"])
    assert rec["status"] == "failed" and rec["attempt"] == 2, rec
    call, note, tenant = rec["steps"]
    assert len(target.requests) == 2 and all(h["x-api-key"] == API_KEY for h, _ in target.requests)
    assert PASSWORD.encode() in target.requests[0][1]
    # the log step printed a header value and a response body (into the run record) …
    assert API_KEY in note["output"] and RESPONSE_TOKEN in note["output"]
    # … and the failing step's error text holds a header value.
    assert tenant["status"] == "failed" and TENANT in tenant["error"]["message"], tenant
    assert call["output"]["headers"]["x-tenant"] == TENANT

    logged = _logged(every_log_line, capsys)
    assert "run_retrying" in logged and "run_finished" in logged, "the capture saw the worker's lines"
    for name, value in {
        "token": token,
        "signing secret": secret,
        "X-Api-Key value": API_KEY,
        "body password": PASSWORD,
        "response token": RESPONSE_TOKEN,
        "X-Tenant value": TENANT,
    }.items():
        assert value not in logged, f"the {name} is in the log"


def test_a_step_that_crashes_is_logged_without_its_exception_text(every_log_line: Any, capsys: Any) -> None:
    def emit(name: str, data: Any, step_id: str) -> str:
        raise RuntimeError(f"could not publish with X-Api-Key: {API_KEY}")

    ctx = RunContext(
        task={"id": "t"}, run={"id": "r"}, input=None, event=None, task_id="t", run_id="r", attempt=1, signing_secret=""
    )
    result = run_pipeline({"steps": [{"id": "e", "type": "emit", "name": "x"}]}, ctx, emit=emit)
    assert result.error is not None and API_KEY in result.error["message"], "the run record keeps it"
    crashed = [r for r in every_log_line.records if r.getMessage() == "pipeline_step_crashed"]
    assert crashed and crashed[0].error_type == "RuntimeError" and crashed[0].at  # type: ignore[attr-defined]
    assert API_KEY not in _logged(every_log_line, capsys)
