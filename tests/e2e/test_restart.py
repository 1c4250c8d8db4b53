"""The local stack keeps its state across a crash: `python -m local` with its own state directory,
killed with SIGKILL mid-schedule, then started again on the same directory."""

from __future__ import annotations

import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.domain.signing import verify
from tests.secrets_seen import CHECKER
from tests.stack import TICK_SECONDS, LocalStack, _alive, launch

pytestmark = pytest.mark.e2e
API_KEY = CHECKER.canary()  # a secret header kept in the state journal across the crash: never logged
FLUSH_WAIT = 2.5  # the journal is written every second: this is "a few seconds" after the last write
ONCE_AFTER = 15  # seconds from the once task's create to its fire: the crash comes ~3 s after the create


def _start(state: Path, admin: str) -> LocalStack:
    return launch(
        admin,
        TASKAPI_PREFIX="tasksapi-restart-",
        TASKAPI_STATE=str(state),
        TASKAPI_EGRESS_ALLOW="127.0.0.1",  # the signed HTTP target below listens on loopback
    )


def _call(stack: LocalStack, method: str, path: str, token: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, stack.base_url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _runs(stack: LocalStack, token: str, task_id: str) -> list[dict[str, Any]]:
    r = _call(stack, "GET", f"/tasks/{task_id}/runs?limit=200", token)
    assert r.status_code == 200, r.text
    return list(r.json()["runs"])


def _wait_for(what: str, check: Any, timeout: float, stacks: list[LocalStack]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s\n" + "\n".join(s.output()[-4000:] for s in stacks))
        time.sleep(0.3)


def _task(agent_id: str, title: str, kind: str, expr: str | None) -> dict[str, Any]:
    body = {
        "title": title,
        "description": "",
        "schedule_kind": kind,
        "created_by": agent_id,
        "payload": {"steps": [{"id": "note", "type": "log", "message": f"{title} ran"}]},
    }
    if expr is not None:
        body["schedule_expr"] = expr
    return body


class _Target(BaseHTTPRequestHandler):
    """Records each request's signature header and body."""

    seen: list[tuple[str, bytes]] = []
    api_keys: list[str | None] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.headers.get("X-Tasks-Signature", ""), body))
        self.api_keys.append(self.headers.get("X-Api-Key"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_kill_9_and_restart_keeps_agents_tasks_history_and_runs_each_due_fire_once(tmp_path: Path) -> None:
    state, admin = tmp_path / "state", "restart-admin-" + secrets.token_urlsafe(16)
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    first = _start(state, admin)
    second: LocalStack | None = None
    try:
        # GIVEN an agent with an event task and an every-minute task, each with a finished run
        r = _call(first, "POST", "/agents", admin, {"name": "survivor"})
        assert r.status_code == 201, r.text
        agent = r.json()
        CHECKER.agent(agent)
        token = agent["token"]
        ids = {}
        for title, kind, expr in [("on-order", "event", "order.*"), ("every-minute", "cron", "* * * * *")]:
            r = _call(first, "POST", "/tasks", token, _task(agent["agent_id"], title, kind, expr))
            assert r.status_code == 201, r.text
            ids[title] = r.json()["id"]
        signed = _task(agent["agent_id"], "signed", "event", None)
        signed["payload"] = {
            "steps": [
                {
                    "id": "call",
                    "type": "http",
                    "url": f"http://127.0.0.1:{target.server_port}/hook",
                    "headers": {"X-Api-Key": API_KEY},
                }
            ]
        }
        r = _call(first, "POST", "/tasks", token, signed)
        assert r.status_code == 201, r.text
        signed_id = r.json()["id"]
        r = _call(first, "POST", f"/tasks/{ids['every-minute']}/run_now", token, {"input": {"why": "before"}})
        assert r.status_code == 202, r.text
        manual = r.json()["run"]["id"]
        r = _call(first, "POST", "/events", token, {"name": "order.created", "data": {"id": 7}})
        assert r.status_code == 202, r.text
        evented = r.json()["runs"][0]["run_id"]

        def finished_before() -> bool:
            done = {run["id"]: run["status"] for t in ids.values() for run in _runs(first, token, t)}
            return done.get(manual) == "succeeded" and done.get(evented) == "succeeded"

        _wait_for("the manual and event runs to succeed", finished_before, 60, [first])

        # ... and a `once` task due a few seconds after the crash: its fire is inside the look-ahead,
        # so the create sends its delayed message before answering (dispatch-on-write). Made last,
        # so its fire falls while the stack is down or coming back, not in a wait of the test's own.
        fire = (datetime.now(UTC) + timedelta(seconds=ONCE_AFTER)).replace(microsecond=0)
        once = _task(agent["agent_id"], "once-later", "once", fire.strftime("%Y-%m-%dT%H:%M:%SZ"))
        r = _call(first, "POST", "/tasks", token, once)
        assert r.status_code == 201, r.text
        ids["once-later"] = r.json()["id"]
        assert datetime.now(UTC) < fire - timedelta(seconds=5), "setup too slow: the once fire is not in flight"

        # WHEN the stack is killed without warning, a few seconds after the last write
        time.sleep(FLUSH_WAIT)
        moto_pid = first.moto_pid()
        assert moto_pid is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        _wait_for("the emulator to die with its parent", lambda: not _alive(moto_pid), 10, [first])

        # ... and started again on the same state directory
        second = _start(state, admin)

        # THEN the agent's token still works and its tasks and history are there
        r = _call(second, "GET", "/tasks", token)
        assert r.status_code == 200, r.text
        assert {t["id"] for t in r.json()["tasks"]} == {*ids.values(), signed_id}
        restored = second.events("state_restored")
        assert restored and restored[0]["items"] > 0, second.output()[-3000:]
        assert restored[0]["kms_keys_kept"] >= 1  # the signing-secrets key came back with the data
        manual_run = next(run for run in _runs(second, token, ids["every-minute"]) if run["id"] == manual)
        assert manual_run["status"] == "succeeded" and manual_run["input"] == {"why": "before"}
        event_run = next(run for run in _runs(second, token, ids["on-order"]) if run["id"] == evented)
        assert event_run["status"] == "succeeded" and event_run["event"]["data"] == {"id": 7}

        # ... the fire that was in flight at the crash runs, once
        once_runs = _wait_for(
            "the once task's fire to run after the restart",
            lambda: [run for run in _runs(second, token, ids["once-later"]) if run["status"] == "succeeded"],
            60,
            [first, second],
        )
        time.sleep(3 * TICK_SECONDS)  # room for a second copy to show up, if one were sent
        once_runs = _runs(second, token, ids["once-later"])
        assert len(once_runs) == 1, once_runs
        assert once_runs[0]["scheduled_for"] == fire.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert once_runs[0]["attempt"] == 1
        r = _call(second, "GET", f"/tasks/{ids['once-later']}", token)
        assert r.json()["status"] == "completed"

        # ... and nothing ran twice: one record per minute fire, one execution per run id
        minute_runs = _runs(second, token, ids["every-minute"])
        fires = Counter(run["scheduled_for"] for run in minute_runs if run["trigger"] == "schedule")
        assert all(n == 1 for n in fires.values()), fires
        executed = Counter(e["run_id"] for s in (first, second) for e in s.events("run_finished"))
        assert executed[manual] == 1 and executed[evented] == 1 and executed[once_runs[0]["id"]] == 1
        assert [run_id for run_id, n in executed.items() if n > 1] == []

        # ... and the agent's signing secret, encrypted before the crash, still signs after it
        r = _call(second, "POST", f"/tasks/{signed_id}/run_now", token, {})
        assert r.status_code == 202, r.text
        signed_run = r.json()["run"]["id"]
        _wait_for(
            "the signed HTTP run to succeed after the restart",
            lambda: any(
                run["id"] == signed_run and run["status"] == "succeeded" for run in _runs(second, token, signed_id)
            ),
            60,
            [second],
        )
        header, body = _Target.seen[-1]
        assert verify(agent["signing_secret"], header, body, now=int(time.time()))
        assert _Target.api_keys[-1] == API_KEY
    finally:
        target.shutdown()
        for stack in (first, second):
            if stack is not None and stack.proc.poll() is None:
                stack.proc.send_signal(signal.SIGTERM)
                try:
                    stack.proc.wait(15)
                except subprocess.TimeoutExpired:
                    stack.proc.kill()
    assert second is not None and second.proc.returncode == 0, second.output()[-3000:] if second else ""
    assert (state / "CURRENT").exists()  # the state went to the test's own directory
