"""In-process AWS (the `aws` fixture of tests/conftest.py, moto with the resources from infra/,
created once per test process); every test starts from empty tables and queues."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import clock, workers  # noqa: F401 - fixtures for every test here
from tests.secrets_seen import CHECKER

ADMIN = {"Authorization": "Bearer " + CHECKER.secret("admin token", "admin-token-for-tests-only")}


def _empty_tables() -> None:
    # Item-by-item deletes take seconds after a bulk test; empty moto's tables directly.
    from moto.dynamodb.models import dynamodb_backends

    for table in dynamodb_backends["123456789012"]["us-east-1"].tables.values():
        table.items.clear()


def _empty_queues() -> None:
    # PurgeQueue is rate-limited to once a minute per queue; empty moto's queues directly.
    from moto.sqs.models import sqs_backends

    for q in sqs_backends["123456789012"]["us-east-1"].queues.values():
        with q._messages_lock:
            q._messages.clear()
            q._pending_messages.clear()


@pytest.fixture()
def env(aws: None) -> Iterator[None]:
    from chalicelib.platform import wiring

    _empty_tables()
    _empty_queues()
    wiring.reset()
    yield
    wiring.reset()


class Api:
    """A thin JSON wrapper over chalice's test client."""

    def __init__(self, client: Any) -> None:
        self.c = client

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | str | None = None,
    ) -> Any:
        h = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        resp = (
            getattr(self.c.http, method.lower())(path, headers=h, body=payload)
            if payload is not None
            else getattr(self.c.http, method.lower())(path, headers=h)
        )
        resp.data = json.loads(resp.body) if resp.body else None
        if isinstance(resp.data, dict) and "token" in resp.data and "signing_secret" in resp.data:
            CHECKER.agent(resp.data)  # every agent a test creates, for the log check (tests/secrets_seen.py)
        return resp

    def agent(self, name: str = "agent") -> dict[str, Any]:
        r = self.call("POST", "/agents", {"name": name}, headers=ADMIN)
        assert r.status_code == 201, r.body
        return r.data


@pytest.fixture()
def api(env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="test") as client:
        # The stage's environment (.chalice/config.json), applied once for the test. chalice's
        # client would swap `os.environ` for a plain dict around each request, and two requests
        # from threads (the race tests) can restore each other's dict: `os.environ` then stays a
        # dict for the rest of the process, its changes never reach the C environment, and a later
        # test's SSL_CERT_FILE was not seen by OpenSSL.
        http = client.http
        scoped = http._config.scope(http._config.chalice_stage, "api_handler")
        for name, value in scoped.environment_variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(http, "_patched_env_vars", lambda variables: contextlib.nullcontext())
        yield Api(client)


def task_body(agent_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Nightly report",
        "description": "Collect and send the report",
        "schedule_kind": "cron",
        "schedule_expr": "30 2 * * *",
        "timezone": "Europe/Chisinau",
        "payload": {"steps": [{"id": "say", "type": "log", "message": "hello {{ task.title }}"}]},
        "created_by": agent_id,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}
