"""Every run ends (issue 13, item 1, the worker's part): attempts are counted on every claim,
a takeover included; a run never exceeds max_attempts and fails `worker_lost` when its last
attempt's worker is lost; a worker that overran its lease cannot overwrite a newer attempt;
a wait for a concurrency slot ends with `concurrency_wait_timeout`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from chalicelib.platform.config import settings
from chalicelib.store.models import KeyModel
from tests.integration.harness import Crash, all_messages, queue_url, run_records
from tests.integration.test_counters import hooks  # noqa: F401 - the fixture
from tests.integration.test_worker import _create, _http_payload


def _run_now(api, agent, task_id: str) -> str:
    r = api.call("POST", f"/tasks/{task_id}/run_now", token=agent["token"])
    assert r.status_code == 202, r.body
    return r.data["run"]["id"]


def _counts(api, agent, task_id: str) -> tuple[int, int, str | None]:
    got = api.call("GET", f"/tasks/{task_id}", token=agent["token"]).data
    return got["run_count"], got["failure_count"], got["last_run_status"]


def test_a_takeover_of_a_run_whose_attempts_are_spent_fails_it_worker_lost(api, clock, workers, hooks):  # noqa: F811
    # GIVEN a run with one attempt allowed whose worker dies after the claim, mid-run
    agent = api.agent()
    t = _create(api, agent, max_retries=0)
    run_id = _run_now(api, agent, t["id"])
    died: list[str] = []

    def die_once(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == "test-stats" and not died:
            died.append("dead")
            raise Crash("the worker dies")

    hooks("before-parameter-build.dynamodb.UpdateItem", die_once)
    workers.drain()
    assert died and run_records(t["id"])[0]["status"] == "running"
    # WHEN its message comes back after the lease
    clock.advance(301)
    workers.drain()
    # THEN the run is not executed a second time: it fails worker_lost, counted once
    [rec] = run_records(t["id"])
    assert (rec["id"], rec["status"], rec["attempt"], rec["error"]["type"]) == (run_id, "failed", 1, "worker_lost")
    assert rec["finished_at"] == "2027-03-01T12:05:01Z"
    assert _counts(api, agent, t["id"]) == (1, 1, "failed")
    assert all_messages() == []


def test_a_run_whose_worker_keeps_dying_never_exceeds_max_attempts(api, clock, workers, hooks):  # noqa: F811
    # GIVEN a once task with two attempts whose worker dies after each of its first two claims
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z", max_retries=1)
    deaths: list[int] = []

    def die(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == "test-stats" and len(deaths) < 2:
            deaths.append(1)
            raise Crash("the worker dies")

    hooks("before-parameter-build.dynamodb.UpdateItem", die)
    clock.advance(30)
    # WHEN its message comes back after each lease, again and again
    seen = []
    for _ in range(6):
        workers.drain()
        seen.append(run_records(t["id"])[0]["attempt"])
        clock.advance(301)
    # THEN two attempts ran, and the third claim failed the run worker_lost instead of a third execution
    [rec] = run_records(t["id"])
    assert len(deaths) == 2 and max(seen) == 2
    assert (rec["status"], rec["attempt"], rec["error"]["type"]) == ("failed", 2, "worker_lost")
    assert all_messages() == []
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["status"] == "completed"  # its only run ended


class InlineTarget:
    """An HTTP target whose first request is answered only after `during_first()` ran (here: a
    second worker taking the run over), with `first_status`; later requests get 200 at once."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.first_status = 400
        self.during_first: Any = None
        target = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target.requests.append({k.lower(): v for k, v in self.headers.items()})
                status = 200
                if len(target.requests) == 1:
                    target.during_first()
                    status = target.first_status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def inline(monkeypatch: pytest.MonkeyPatch) -> Iterator[InlineTarget]:
    monkeypatch.setenv("TASKAPI_EGRESS_ALLOW", "127.0.0.1")
    settings.cache_clear()
    t = InlineTarget()
    yield t
    t.server.shutdown()
    monkeypatch.delenv("TASKAPI_EGRESS_ALLOW")
    settings.cache_clear()


def test_a_worker_that_overran_its_lease_cannot_overwrite_the_newer_attempt(api, clock, workers, inline):
    # GIVEN a run whose first worker stalls in its HTTP step past its lease (60 s), while a copy
    # of its message takes the run over (attempt 2) and succeeds
    agent = api.agent()
    payload = _http_payload(inline.url)
    payload["steps"][0]["timeout_seconds"] = 30  # lease: 30 + 30 s; the stall must not time the step out
    t = _create(api, agent, payload=payload, max_retries=2)
    run_id = _run_now(api, agent, t["id"])
    [body] = all_messages()
    taken_over: list[list[dict[str, Any]]] = []

    def take_over() -> None:
        clock.advance(61)
        boto3.client("sqs").send_message(QueueUrl=queue_url("normal"), MessageBody=json.dumps(body))
        deadline = time.monotonic() + 20
        while not any(r["status"] == "succeeded" for r in run_records(t["id"])) and time.monotonic() < deadline:
            workers.poll_once()
        taken_over.append(run_records(t["id"]))

    inline.during_first = take_over
    inline.first_status = 400  # the stalled attempt then fails (not retryable)
    # WHEN the first worker comes back and records its outcome
    workers.poll_once()
    # THEN the newer attempt's outcome stands: succeeded at attempt 2, counted once as succeeded
    assert [r["status"] for r in taken_over[0]] == ["succeeded"]
    [rec] = run_records(t["id"])
    assert (rec["id"], rec["status"], rec["attempt"], rec["error"]) == (run_id, "succeeded", 2, None)
    assert [r["x-attempt"] for r in inline.requests] == ["1", "2"]
    assert _counts(api, agent, t["id"]) == (1, 0, "succeeded")


def test_a_wait_for_a_concurrency_slot_ends_with_concurrency_wait_timeout(api, clock, workers):
    # GIVEN the only slot of a concurrency key is held for hours (a stuck holder)
    agent = api.agent()
    t = _create(api, agent, concurrency_key="crm", concurrency_limit=1)
    KeyModel(f"conc#{agent['agent_id']}#crm#0", holder="stuck-run", until=int(clock.t) + 10 * 3600).save()
    run_id = _run_now(api, agent, t["id"])
    # WHEN the run waits for it (the message comes back again and again)
    states = []
    for _ in range(8):
        workers.drain()
        states.append(run_records(t["id"])[0]["status"])
        clock.advance(10 * 60)
    # THEN it stays queued for the hour the wait may last, then fails concurrency_wait_timeout
    assert states[:7] == ["queued"] * 7 and states[7] == "failed"
    [rec] = run_records(t["id"])
    assert (rec["id"], rec["attempt"], rec["error"]["type"]) == (run_id, 0, "concurrency_wait_timeout")
    assert all_messages() == []
    assert _counts(api, agent, t["id"]) == (1, 1, "failed")
    dlq = boto3.client("sqs").receive_message(QueueUrl=queue_url("normal") + "-dlq").get("Messages")
    assert not dlq
