"""SIGTERM stops the local stack within a few seconds, exit 0, whatever is in flight: a worker
batch whose HTTP step waits on a target that never answers, a request whose announced body never
arrives, and one whose headers never end. A private stack: stopping it is the test."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from tests.stack import LocalStack, _alive, _port_open, launch

pytestmark = pytest.mark.e2e

# "Within a few seconds": the runtime gives in-flight work 4 s, then exits. The margin is for a
# loaded 2-core machine; before this bound existed, a stalled step held the exit for its whole timeout.
STOP_WITHIN = 10.0
STALL_SECONDS = 60


class _Stall(BaseHTTPRequestHandler):
    """Takes the request and never answers (until long after the test)."""

    hit = threading.Event()

    def do_POST(self) -> None:
        _Stall.hit.set()
        time.sleep(STALL_SECONDS + 5)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_target() -> Iterator[int]:
    _Stall.hit.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stall)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def _stop(stack: LocalStack) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None: still running after STOP_WITHIN, then killed) and the time taken."""
    started = time.monotonic()
    stack.proc.send_signal(signal.SIGTERM)
    try:
        rc: int | None = stack.proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        rc = None
    elapsed = time.monotonic() - started
    if rc is None:
        stack.proc.kill()
        stack.proc.wait(10)
    time.sleep(0.5)  # the reader's last lines
    return rc, elapsed


def _assert_stopped_cleanly(stack: LocalStack, rc: int | None, elapsed: float) -> None:
    moto_pid = stack.moto_pid()
    try:
        assert rc is not None, f"still running {elapsed:.1f} s after SIGTERM:\n{stack.output()[-4000:]}"
        assert rc == 0, f"exit code {rc} {elapsed:.1f} s after SIGTERM:\n{stack.output()[-4000:]}"
        assert stack.events("stopped"), stack.output()[-4000:]
        assert moto_pid is not None and not _alive(moto_pid), "the moto server outlived python -m local"
        for url in (stack.base_url, stack.moto_endpoint):
            port = urlsplit(url).port
            assert port is not None and not _port_open(port), f"something still listens on {url}"
    finally:
        if moto_pid is not None and _alive(moto_pid):
            os.kill(moto_pid, signal.SIGKILL)


def _open_partial_requests(stack: LocalStack) -> list[socket.socket]:
    url = urlsplit(stack.base_url)
    assert url.hostname is not None and url.port is not None
    partial_body = socket.create_connection((url.hostname, url.port))
    partial_body.sendall(b'POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"na')
    partial_headers = socket.create_connection((url.hostname, url.port))
    partial_headers.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Len")
    return [partial_body, partial_headers]


def test_sigterm_mid_step_and_mid_request_exits_within_seconds(stalling_target: int) -> None:
    stack = launch(
        "stop-admin-" + secrets.token_urlsafe(24),
        TASKAPI_PREFIX="tasksapi-stop-",
        TASKAPI_STATE="memory",
        TASKAPI_EGRESS_ALLOW="127.0.0.1",
    )
    conns: list[socket.socket] = []
    try:
        admin = requests.post(f"{stack.base_url}/agents", json={"name": "stop"}, headers=stack.admin(), timeout=10)
        assert admin.status_code == 201, admin.text
        agent = admin.json()
        auth = {"Authorization": f"Bearer {agent['token']}"}
        step = {
            "id": "wait",
            "type": "http",
            "method": "POST",
            "url": f"http://127.0.0.1:{stalling_target}/hook",
            "timeout_seconds": STALL_SECONDS,
        }
        body = {
            "title": "stalls",
            "description": "",
            "created_by": agent["agent_id"],
            "schedule_kind": "event",
            "payload": {"steps": [step]},
        }
        task = requests.post(f"{stack.base_url}/tasks", json=body, headers=auth, timeout=10)
        assert task.status_code == 201, task.text
        run = requests.post(f"{stack.base_url}/tasks/{task.json()['id']}/run_now", json={}, headers=auth, timeout=10)
        assert run.status_code == 202, run.text
        # The setup holds: the worker is inside the step, waiting on the target.
        assert _Stall.hit.wait(30), f"the HTTP step never reached the target:\n{stack.output()[-4000:]}"
        conns = _open_partial_requests(stack)
        time.sleep(0.5)  # both requests are being read by their handler threads
        rc, elapsed = _stop(stack)
        _assert_stopped_cleanly(stack, rc, elapsed)
    finally:
        for c in conns:
            c.close()
        if stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.wait(10)
