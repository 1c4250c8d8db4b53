"""The pipeline executor against a real local HTTP(S) server and moto.

Self-contained: no app import, its own fixtures. The local server listens on
127.0.0.1, which the egress guard blocks unless TASKAPI_EGRESS_ALLOW opens it, so
the same server also proves the guard (it must receive nothing when blocked).
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from chalicelib.domain.allowlist import AgentEgress
from chalicelib.domain.signing import verify
from chalicelib.execution import pipeline
from chalicelib.execution.pipeline import PipelineResult, RunContext, run_pipeline
from chalicelib.platform import wiring
from chalicelib.platform.config import settings

SECRET = "whsec_integration-secret"
TASK_ID = "0b7e1c5e-8d2a-4c55-9f11-2a1e6f6c0d01"
RUN_ID = "run-abc-123"


# ---------------------------------------------------------------------------- local server


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(item)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder
    base: str

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.recorder.add(  # type: ignore[attr-defined]
            {"method": self.command, "path": url.path, "query": q, "headers": dict(self.headers.items()), "raw": raw}
        )
        path = url.path
        if path == "/echo":
            got: Any
            try:
                got = json.loads(raw) if raw else None
            except ValueError:
                got = raw.decode()
            self._send(200, json.dumps({"x": 7, "got": got, "method": self.command}), "application/json")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), json.dumps({"error": "nope"}), "application/json")
        elif path == "/sleep":
            time.sleep(float(q.get("s", "3")))
            self._send(200, "late", "text/plain")
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "10")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)
        elif path == "/redirect":
            self._send(int(q.get("code", "302")), "", "text/plain", {"Location": q["to"]})
        elif path == "/loop":
            self._send(302, "", "text/plain", {"Location": "/loop"})
        elif path == "/big":
            self._send(200, json.dumps({"data": "é" * 20_000}), "application/json")
        elif path == "/text":
            self._send(200, "plain words", "text/plain; charset=utf-8", {"X-Custom": "Yes"})
        else:
            self._send(404, "not here", "text/plain")

    def _send(self, status: int, body: str, ctype: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.recorder = Recorder()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.recorder = self.recorder  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.recorder.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def allow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set TASKAPI_EGRESS_ALLOW for this test (settings are cached: clear around it)."""

    def set_allow(value: str) -> None:
        monkeypatch.setenv("TASKAPI_EGRESS_ALLOW", value)
        settings.cache_clear()

    monkeypatch.delenv("TASKAPI_EGRESS_ALLOW", raising=False)
    settings.cache_clear()
    yield set_allow
    settings.cache_clear()


@pytest.fixture()
def loopback(allow: Any) -> None:
    allow("127.0.0.1")


class Emits:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, name: str, data: Any, step_id: str = "") -> str:
        self.calls.append((name, data))
        return f"evt-{len(self.calls)}"


def ctx(**over: Any) -> RunContext:
    base: dict[str, Any] = {
        "task": {"id": TASK_ID, "title": "Nightly report", "priority": 4},
        "run": {"id": RUN_ID, "attempt": 2},
        "input": {"who": "Ana", "n": 3},
        "event": None,
        "task_id": TASK_ID,
        "run_id": RUN_ID,
        "attempt": 2,
        "signing_secret": SECRET,
        # The AWS step tests below are about the calls; per-agent target checks have their own tests.
        "egress": AgentEgress(aws_targets=("*",)),
    }
    base.update(over)
    return RunContext(**base)


def run(steps: list[dict[str, Any]], emit: Any = None, **kw: Any) -> PipelineResult:
    return run_pipeline({"steps": steps}, ctx(), emit=emit or Emits(), **kw)


# ---------------------------------------------------------------------------- http


def test_http_post_json_headers_and_signature(server: Server, loopback: None) -> None:
    step = {
        "id": "a",
        "type": "http",
        "url": server.base + "/echo",
        "query": {"who": "{{ input.who }}", "n": 5},
        "headers": {"X-Custom": "v-{{ input.n }}", "X-Task-Id": "forged", "Idempotency-Key": "forged", "Host": "evil"},
        "body": {"hello": "{{ input.who }}", "n": "{{ input.n }}", "ü": "✓"},
    }
    before = int(time.time())
    result = run([step])
    assert result.error is None and not result.retryable
    [out] = result.steps
    assert out.status == "succeeded" and out.error is None and not out.output_truncated
    assert out.started_at and out.started_at.endswith("Z") and out.duration_ms is not None
    assert out.output["status"] == 200
    assert out.output["body"] == {"x": 7, "got": {"hello": "Ana", "n": 3, "ü": "✓"}, "method": "POST"}
    assert out.output["headers"]["content-type"] == "application/json"

    [req] = server.requests
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert req["method"] == "POST" and req["query"] == {"who": "Ana", "n": "5"}
    assert h["idempotency-key"] == RUN_ID and h["x-run-id"] == RUN_ID
    assert h["x-task-id"] == TASK_ID and h["x-attempt"] == "2"
    assert h["user-agent"] == "tasks-api/1"
    assert h["host"] == f"127.0.0.1:{server.port}"
    assert h["content-type"] == "application/json" and h["x-custom"] == "v-3"
    assert json.loads(req["raw"]) == {"hello": "Ana", "n": 3, "ü": "✓"}
    sig = h["x-tasks-signature"]
    t = int(sig.split(",")[0].removeprefix("t="))
    assert before <= t <= int(time.time())
    assert verify(SECRET, sig, req["raw"], now=int(time.time()))
    assert not verify("whsec_wrong", sig, req["raw"], now=int(time.time()))
    assert not verify(SECRET, sig, req["raw"] + b" ", now=int(time.time()))


def test_http_string_body_and_user_content_type(server: Server, loopback: None) -> None:
    step = {
        "id": "a",
        "type": "http",
        "method": "PUT",
        "url": server.base + "/echo",
        "headers": {"Content-Type": "text/csv"},
        "body": "a,b\n{{ input.n }},2",
    }
    result = run([step])
    assert result.error is None
    [req] = server.requests
    assert req["raw"] == b"a,b\n3,2" and req["headers"]["Content-Type"] == "text/csv"
    assert verify(SECRET, req["headers"]["X-Tasks-Signature"], b"a,b\n3,2", now=int(time.time()))


def test_http_get_without_body_signs_empty_bytes(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "method": "GET", "url": server.base + "/text"}])
    out = result.steps[0].output
    assert out == {"status": 200, "headers": out["headers"], "body": "plain words"}
    assert out["headers"]["x-custom"] == "Yes"
    [req] = server.requests
    assert req["raw"] == b"" and "Content-Type" not in req["headers"]
    assert verify(SECRET, req["headers"]["X-Tasks-Signature"], b"", now=int(time.time()))


def test_expect_status_mismatch_fails(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/echo", "expect_status": [201]}])
    assert result.error == {"type": "http_status", "message": "status 200, expected 201", "step": "a"}
    assert not result.retryable
    assert result.steps[0].status == "failed" and result.steps[0].output["status"] == 200


def test_expect_status_match_accepts_non_2xx(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/status/404", "expect_status": [404]}])
    assert result.error is None and result.steps[0].output["body"] == {"error": "nope"}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (400, False), (409, False)],
)
def test_status_classification(server: Server, loopback: None, status: int, retryable: bool) -> None:
    result = run([{"id": "a", "type": "http", "url": f"{server.base}/status/{status}"}])
    assert result.error is not None and result.error["type"] == "http_status" and result.error["step"] == "a"
    assert result.retryable is retryable
    assert result.steps[0].output["status"] == status


def test_timeout_is_retryable(server: Server, loopback: None) -> None:
    t0 = time.monotonic()
    result = run(
        [{"id": "slow", "type": "http", "method": "GET", "url": server.base + "/sleep?s=3", "timeout_seconds": 1}]
    )
    elapsed = time.monotonic() - t0
    assert result.error is not None and result.error["type"] == "timeout" and result.retryable
    assert 0.9 <= elapsed < 2.5


def test_trickling_server_cannot_outlast_the_timeout(server: Server, loopback: None) -> None:
    # Every byte arrives well within the socket timeout; only a total deadline stops it.
    t0 = time.monotonic()
    result = run(
        [{"id": "slow", "type": "http", "method": "GET", "url": server.base + "/trickle", "timeout_seconds": 1}]
    )
    assert result.error is not None and result.error["type"] == "timeout" and result.retryable
    assert time.monotonic() - t0 < 2


def test_deadline_caps_the_step(server: Server, loopback: None) -> None:
    now = time.time()
    result = run(
        [{"id": "slow", "type": "http", "url": server.base + "/sleep?s=3", "timeout_seconds": 30}],
        deadline=now + 0.5,
    )
    assert result.error is not None and result.error["type"] == "timeout" and result.retryable
    past = run([{"id": "x", "type": "log", "message": "hi"}], deadline=time.time() - 1)
    assert past.error is not None and past.error["type"] == "timeout" and past.retryable


def test_connection_refused_is_retryable_network(loopback: None) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    result = run([{"id": "a", "type": "http", "url": f"http://127.0.0.1:{port}/"}])
    assert result.error is not None and result.error["type"] == "network" and result.retryable


def test_without_allow_list_nothing_is_sent(server: Server, allow: Any) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/echo", "body": {"secret": 1}}])
    assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
    assert "127.0.0.1" in result.error["message"]
    assert server.requests == []


def test_localhost_name_blocked_without_allow_list(server: Server, allow: Any) -> None:
    result = run([{"id": "a", "type": "http", "url": f"http://localhost:{server.port}/echo"}])
    assert result.error is not None and result.error["type"] == "egress_blocked"
    assert server.requests == []


@pytest.mark.parametrize(
    "to", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]/", "file:///etc/passwd"]
)
def test_redirect_into_blocked_address_is_not_followed(server: Server, loopback: None, to: str) -> None:
    result = run([{"id": "a", "type": "http", "method": "GET", "url": f"{server.base}/redirect?to={to}"}])
    assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
    assert [r["path"] for r in server.requests] == ["/redirect"]


def test_redirect_to_loopback_on_another_port_is_blocked_unless_allowed_by_name(server: Server, allow: Any) -> None:
    # Only 127.0.0.1 is allowed: a redirect to "localhost" is judged on its own (name not allowed, ::1/127.0.0.1...).
    allow("127.0.0.1/32")
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "GET",
                "url": f"{server.base}/redirect?to=http://127.0.0.2:{server.port}/echo",
            }
        ]
    )
    assert result.error is not None and result.error["type"] == "egress_blocked"


def test_redirect_on_the_allowed_server_is_followed(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": f"{server.base}/redirect?to=/echo", "body": {"k": 1}}])
    assert result.error is None
    assert result.steps[0].output["body"]["method"] == "GET"  # 302 after POST -> GET without body
    assert [(r["method"], r["path"]) for r in server.requests] == [("POST", "/redirect"), ("GET", "/echo")]
    second = server.requests[1]
    assert second["raw"] == b"" and verify(SECRET, second["headers"]["X-Tasks-Signature"], b"", now=int(time.time()))
    assert second["headers"]["Idempotency-Key"] == RUN_ID


def test_307_keeps_method_and_body(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": f"{server.base}/redirect?code=307&to=/echo", "body": {"k": 1}}])
    assert result.error is None
    assert result.steps[0].output["body"] == {"x": 7, "got": {"k": 1}, "method": "POST"}
    second = server.requests[1]
    assert verify(SECRET, second["headers"]["X-Tasks-Signature"], second["raw"], now=int(time.time()))


def test_cross_origin_redirect_drops_the_steps_headers(server: Server, allow: Any) -> None:
    allow("127.0.0.1,localhost")
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "GET",
                "url": f"{server.base}/redirect?to=http://localhost:{server.port}/echo",
                "headers": {"Authorization": "Bearer s3cret", "X-Keep": "1"},
            }
        ]
    )
    assert result.error is None
    first, second = server.requests
    assert first["headers"]["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in second["headers"] and "X-Keep" not in second["headers"]
    # Our own headers still go (the new origin is signed for and told which run this is).
    assert second["headers"]["X-Run-Id"] == RUN_ID and "X-Tasks-Signature" in second["headers"]


def test_cross_origin_redirect_that_keeps_the_body_is_refused(server: Server, allow: Any) -> None:
    allow("127.0.0.1,localhost")
    target = f"http://localhost:{server.port}/echo"
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "POST",
                "url": f"{server.base}/redirect?code=307&to={target}",
                "headers": {"X-Api-Key": "k-123"},
                "body": {"secret": "s"},
            }
        ]
    )
    assert result.error is not None and "cross-origin" in result.error["message"] and not result.retryable
    assert len(server.requests) == 1  # the body never went to the other origin


def test_http_steps_carry_the_runs_event_depth(server: Server, loopback: None) -> None:
    run_pipeline({"steps": [{"id": "a", "type": "http", "url": f"{server.base}/echo"}]}, ctx(depth=3), emit=Emits())
    assert server.requests[0]["headers"][pipeline.EVENT_DEPTH_HEADER] == "3"


def test_redirect_loop_stops(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "method": "GET", "url": f"{server.base}/loop"}])
    assert result.error is not None and result.error["type"] == "http_status" and "redirects" in result.error["message"]
    assert len(server.requests) == 6  # the first request and 5 redirects


def test_3xx_listed_in_expect_status_is_not_followed(server: Server, loopback: None) -> None:
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "GET",
                "url": f"{server.base}/redirect?to=/echo",
                "expect_status": [302],
            }
        ]
    )
    assert result.error is None and result.steps[0].output["headers"]["location"] == "/echo"
    assert len(server.requests) == 1


def test_output_over_limit_is_truncated(server: Server, loopback: None) -> None:
    result = run(
        [
            {"id": "a", "type": "http", "method": "GET", "url": server.base + "/big"},
            {"id": "b", "type": "log", "message": "{{ length(steps.a.output.body.data) }}"},
        ]
    )
    a, b = result.steps
    assert a.status == "succeeded" and a.output_truncated
    assert isinstance(a.output, str) and a.output.startswith('{"status":200')
    stored = json.dumps(a.output, ensure_ascii=False).encode()
    assert 8 * 1024 - 16 <= len(stored) <= 8 * 1024
    assert b.output == 20_000  # later templates see the full output


def test_template_chaining(server: Server, loopback: None) -> None:
    result = run(
        [
            {"id": "a", "type": "http", "method": "GET", "url": server.base + "/echo"},
            {
                "id": "b",
                "type": "http",
                "url": server.base + "/echo",
                "body": {"v": "{{ steps.a.output.body.x }}", "s": "x={{ steps.a.output.body.x }}"},
            },
        ]
    )
    assert result.error is None
    assert json.loads(server.requests[1]["raw"]) == {"v": 7, "s": "x=7"}
    assert result.steps[1].output["body"]["got"] == {"v": 7, "s": "x=7"}


def test_templated_url_must_still_be_http(server: Server, loopback: None) -> None:
    result = run_pipeline(
        {"steps": [{"id": "a", "type": "http", "url": "{{ input.u }}"}]},
        ctx(input={"u": "file:///etc/passwd"}),
        emit=Emits(),
    )
    assert result.error is not None and result.error["type"] == "invalid_step" and not result.retryable


def test_continue_on_error_and_skipped_steps(server: Server, loopback: None) -> None:
    result = run(
        [
            {"id": "a", "type": "http", "url": server.base + "/status/500", "continue_on_error": True},
            {"id": "b", "type": "log", "message": "a was {{ steps.a.output.status }}"},
            {"id": "c", "type": "http", "url": server.base + "/status/404"},
            {"id": "d", "type": "log", "message": "never"},
        ]
    )
    assert [s.status for s in result.steps] == ["failed", "succeeded", "failed", "skipped"]
    assert result.steps[0].error == {"type": "http_status", "message": "status 500, expected 2xx"}
    assert result.steps[1].output == "a was 500"
    assert result.error == {"type": "http_status", "message": "status 404, expected 2xx", "step": "c"}
    assert not result.retryable
    d = result.steps[3]
    assert (d.started_at, d.duration_ms, d.output, d.error) == (None, None, None, None)


def test_continue_on_error_only_failure_means_success(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/status/500", "continue_on_error": True}])
    assert result.error is None and not result.retryable and result.steps[0].status == "failed"


def test_template_error_fails_without_sending(server: Server, loopback: None) -> None:
    result = run(
        [
            {"id": "a", "type": "log", "message": "ok"},
            {"id": "b", "type": "http", "url": server.base + "/echo", "body": {"v": "{{ steps..x }}"}},
            {"id": "c", "type": "log", "message": "after"},
        ]
    )
    assert result.error is not None and result.error["type"] == "template_error" and result.error["step"] == "b"
    assert not result.retryable and server.requests == []
    assert [s.status for s in result.steps] == ["succeeded", "failed", "skipped"]


def test_malformed_step_runs_nothing(server: Server, loopback: None) -> None:
    result = run(
        [
            {"id": "a", "type": "http", "url": server.base + "/echo"},
            {"id": "b", "type": "http", "url": "ftp://x"},
            {"id": "c", "type": "teleport"},
        ]
    )
    assert result.error is not None and result.error["type"] == "invalid_step" and not result.retryable
    assert result.error["step"] == "b"
    assert [s.status for s in result.steps] == ["skipped", "failed", "failed"]
    assert server.requests == []
    whole = run_pipeline({"steps": []}, ctx(), emit=Emits())
    assert whole.error is not None and whole.error["type"] == "invalid_step" and whole.steps == ()


def test_header_injection_refused(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/echo", "headers": {"X-A": "{{ input.v }}"}}])
    assert result.error is None
    bad = run_pipeline(
        {"steps": [{"id": "a", "type": "http", "url": server.base + "/echo", "headers": {"X-A": "{{ input.v }}"}}]},
        ctx(input={"v": "x\r\nX-Evil: 1"}),
        emit=Emits(),
    )
    assert bad.error is not None and bad.error["type"] == "invalid_step"
    assert len(server.requests) == 1


def test_non_ascii_header_value_refused(server: Server, loopback: None) -> None:
    result = run([{"id": "a", "type": "http", "url": server.base + "/echo", "headers": {"X-A": "✓"}}])
    assert result.error is not None and result.error["type"] == "invalid_step" and not result.retryable
    assert server.requests == []


def test_path_and_query_are_percent_encoded(server: Server, loopback: None) -> None:
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "GET",
                "url": server.base + "/echo?q=a b&r=ü&s=%41",
                "query": {"t": "x y"},
            }
        ]
    )
    assert result.error is None, result.error
    assert server.requests[0]["query"] == {"q": "a b", "r": "ü", "s": "A", "t": "x y"}


def test_connects_to_the_checked_address_not_a_second_lookup(
    server: Server, allow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 (allowed) first, then something else.
    The request must reach the checked address, with the name as Host."""
    allow("127.0.0.1")
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *a: Any, **k: Any) -> Any:
        if host == "svc.example":
            lookups.append(host)
            ip = "127.0.0.1" if len(lookups) == 1 else "192.0.2.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    result = run(
        [
            {
                "id": "a",
                "type": "http",
                "method": "GET",
                "url": f"http://svc.example:{server.port}/echo",
                "timeout_seconds": 5,
            }
        ]
    )
    assert result.error is None, result.error
    assert lookups == ["svc.example"]
    assert server.requests[0]["headers"]["Host"] == f"svc.example:{server.port}"


# ---------------------------------------------------------------------------- https


def _tls_material(tmp_path: Any, name: str) -> tuple[str, str, str]:
    """A throwaway CA and a leaf certificate for `name` (cryptography ships with moto)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(paths[0]), str(paths[1]), str(paths[2])


@pytest.fixture()
def https_env(tmp_path: Any, allow: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for `svc.example` from a test CA
    the client trusts via SSL_CERT_FILE; `svc.example` resolves to 127.0.0.1."""
    ca, cert, key = _tls_material(tmp_path, "svc.example")
    seen_sni: list[str] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    def record_sni(sock: Any, name: str | None, context: Any) -> None:
        seen_sni.append(name or "")

    server_ctx.sni_callback = record_sni
    real = socket.getaddrinfo

    def dns(host: Any, port: Any, *a: Any, **k: Any) -> Any:
        if host in ("svc.example", "other.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    allow("svc.example,other.example,127.0.0.1")
    s = Server(tls=server_ctx)
    yield s, seen_sni
    s.close()


def test_https_to_checked_ip_keeps_sni_and_certificate_verification(https_env: tuple[Server, list[str]]) -> None:
    server, sni = https_env
    result = run([{"id": "a", "type": "http", "url": f"https://svc.example:{server.port}/echo", "body": {"k": 1}}])
    assert result.error is None, result.error
    assert result.steps[0].output["body"]["got"] == {"k": 1}
    assert sni == ["svc.example"]
    assert server.requests[0]["headers"]["Host"] == f"svc.example:{server.port}"


def test_https_certificate_for_another_name_is_refused(https_env: tuple[Server, list[str]]) -> None:
    server, _ = https_env
    for url in (f"https://other.example:{server.port}/echo", f"https://127.0.0.1:{server.port}/echo"):
        result = run([{"id": "a", "type": "http", "url": url}])
        assert result.error is not None and result.error["type"] == "network", result.error
        assert "TLS" in result.error["message"]
    assert server.requests == []


# ---------------------------------------------------------------------------- emit, log


def test_emit_step_calls_the_injected_emit() -> None:
    emits = Emits()
    result = run(
        [{"id": "e", "type": "emit", "name": "report.{{ input.who }}", "data": {"n": "{{ input.n }}"}}], emit=emits
    )
    assert result.error is None
    assert emits.calls == [("report.Ana", {"n": 3})]
    assert result.steps[0].output == {"event_id": "evt-1"}


def test_emit_failures_are_classified() -> None:
    def refusing(name: str, data: Any, step_id: str) -> str:
        raise pipeline.StepFailed("invalid_step", "event chain too deep", False)

    result = run([{"id": "e", "type": "emit", "name": "x"}], emit=refusing)
    assert (
        result.error == {"type": "invalid_step", "message": "event chain too deep", "step": "e"}
        and not result.retryable
    )

    def broken(name: str, data: Any, step_id: str) -> str:
        raise RuntimeError("boom")

    result = run([{"id": "e", "type": "emit", "name": "x"}], emit=broken)
    assert result.error is not None and result.error["type"] == "internal" and result.retryable


def test_log_step_output_is_the_message_and_never_the_operator_log(caplog: pytest.LogCaptureFixture) -> None:
    from chalicelib.platform.log import logger

    level = logger.log_level
    logger.setLevel("INFO")
    try:
        result = run(
            [
                {"id": "l", "type": "log", "message": "hello {{ input.who }}, n={{ input.n }}"},
                {"id": "m", "type": "log", "message": {"who": "{{ input.who }}"}},
            ]
        )
    finally:
        logger.setLevel(level)
    assert result.error is None
    assert [s.output for s in result.steps] == ["hello Ana, n=3", {"who": "Ana"}]
    # The message may quote response bodies or header values: it stays in the run record.
    assert not [r for r in caplog.records if "Ana" in r.getMessage() or "Ana" in str(vars(r))]


def test_decimal_payloads_from_dynamodb_are_accepted() -> None:
    from decimal import Decimal

    result = run_pipeline(
        {"steps": [{"id": "l", "type": "log", "message": "{{ input.n }}", "timeout_seconds": Decimal(5)}]},
        ctx(input={"n": Decimal("2.5")}),
        emit=Emits(),
    )
    assert result.error is None and result.steps[0].output == 2.5


# ---------------------------------------------------------------------------- aws (moto)


@pytest.fixture(scope="module")
def moto_aws() -> Iterator[None]:
    """One moto account for the AWS tests of this module (each uses its own resource
    names); cached clients are dropped before and after so none leaks across mocks."""
    wiring.reset()
    pipeline._lambda_client.cache_clear()
    with mock_aws():
        yield
    wiring.reset()
    pipeline._lambda_client.cache_clear()


def test_sqs_step(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="jobs-q")["QueueUrl"]
    result = run(
        [
            {
                "id": "q",
                "type": "sqs",
                "queue_url": url,
                "message_body": {"who": "{{ input.who }}"},
                "message_attributes": {"kind": "{{ task.title }}"},
            }
        ]
    )
    assert result.error is None, result.error
    msgs = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(msgs[0]["Body"]) == {"who": "Ana"}
    assert msgs[0]["MessageAttributes"]["kind"]["StringValue"] == "Nightly report"
    assert result.steps[0].output == {"message_id": msgs[0]["MessageId"]}


def test_sqs_fifo_dedupes_across_attempts(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="jobs-dedupe.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    step = {"id": "q", "type": "sqs", "queue_url": url, "message_body": "hello"}
    assert run([step]).error is None and run([step]).error is None
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(msgs) == 1


def test_sqs_missing_queue_is_not_retryable(moto_aws: None) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/nope"
    result = run([{"id": "q", "type": "sqs", "queue_url": url, "message_body": "x"}])
    assert result.error is not None and result.error["type"] == "aws_error" and not result.retryable


def test_own_queue_is_refused(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName=settings().queue_name("high"))["QueueUrl"]
    result = run([{"id": "q", "type": "sqs", "queue_url": url, "message_body": "forged run"}])
    assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_sns_step(moto_aws: None) -> None:
    sns = boto3.client("sns", region_name="us-east-1")
    arn = sns.create_topic(Name="alerts")["TopicArn"]
    result = run(
        [
            {
                "id": "n",
                "type": "sns",
                "topic_arn": arn,
                "message": {"x": "{{ input.n }}"},
                "subject": "Hi {{ input.who }}",
            }
        ]
    )
    assert result.error is None, result.error
    assert isinstance(result.steps[0].output["message_id"], str) and result.steps[0].output["message_id"]
    bad = run([{"id": "n", "type": "sns", "topic_arn": arn + "-missing", "message": "x"}])
    assert bad.error is not None and bad.error["type"] == "aws_error" and not bad.retryable


def test_eventbridge_step(moto_aws: None) -> None:
    result = run(
        [
            {
                "id": "eb",
                "type": "eventbridge",
                "source": "agents.report",
                "detail_type": "Report {{ input.who }}",
                "detail": {"n": "{{ input.n }}"},
            }
        ]
    )
    assert result.error is None, result.error
    assert result.steps[0].output["event_id"]


def test_eventbridge_missing_bus_fails(moto_aws: None) -> None:
    result = run(
        [{"id": "eb", "type": "eventbridge", "event_bus_name": "no-such-bus", "source": "a.b", "detail_type": "x"}]
    )
    assert result.error is not None and result.error["type"] == "aws_error" and not result.retryable


def test_lambda_missing_function_is_not_retryable(moto_aws: None) -> None:
    # moto needs Docker to really invoke a function; the success, FunctionError and
    # throttling paths are covered above against a fake Invoke endpoint.
    result = run(
        [{"id": "f", "type": "lambda", "function_name": "does-not-exist", "payload": {"who": "{{ input.who }}"}}]
    )
    assert result.error is not None and result.error["type"] == "aws_error" and not result.retryable
    assert "ResourceNotFound" in result.error["message"]


class FakeLambda(BaseHTTPRequestHandler):
    """A stand-in for the Lambda Invoke API (moto needs Docker to run functions): lets
    botocore really call `Invoke` and us check how responses are decoded."""

    protocol_version = "HTTP/1.1"
    calls: list[tuple[str, str, bytes]]

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        name = self.path.split("/functions/", 1)[1].split("/", 1)[0]
        self.calls.append((name, self.headers.get("X-Amz-Invocation-Type", ""), raw))
        headers: dict[str, str] = {}
        if name == "echo":
            status, body = 200, json.dumps({"got": json.loads(raw) if raw else None}).encode()
        elif name == "text":
            status, body = 200, b"not json"
        elif name == "boom":
            status, body = 200, json.dumps({"errorMessage": "bad input", "errorType": "ValueError"}).encode()
            headers["X-Amz-Function-Error"] = "Unhandled"
        elif name == "busy":
            status, body = 429, json.dumps({"Type": "User", "message": "Rate exceeded"}).encode()
            headers["x-amzn-ErrorType"] = "TooManyRequestsException"
        else:
            status, body = 202, b""
        if self.headers.get("X-Amz-Invocation-Type") == "Event" and status == 200:
            status, body = 202, b""
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def fake_lambda(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, bytes]]]:
    calls: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (FakeLambda,), {"calls": calls})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{httpd.server_address[1]}")
    pipeline._lambda_client.cache_clear()
    yield calls
    httpd.shutdown()
    httpd.server_close()
    pipeline._lambda_client.cache_clear()


def test_lambda_request_response(fake_lambda: list[tuple[str, str, bytes]]) -> None:
    result = run([{"id": "f", "type": "lambda", "function_name": "echo", "payload": {"who": "{{ input.who }}"}}])
    assert result.error is None, result.error
    assert result.steps[0].output == {"got": {"who": "Ana"}}
    assert fake_lambda == [("echo", "RequestResponse", b'{"who":"Ana"}')]
    text = run([{"id": "f", "type": "lambda", "function_name": "text"}])
    assert text.error is None and text.steps[0].output == "not json"


def test_lambda_function_error_is_retryable_and_keeps_the_error_payload(
    fake_lambda: list[tuple[str, str, bytes]],
) -> None:
    result = run([{"id": "f", "type": "lambda", "function_name": "boom"}])
    assert result.error == {"type": "function_error", "message": "Unhandled function error: bad input", "step": "f"}
    assert result.retryable
    assert result.steps[0].output == {"errorMessage": "bad input", "errorType": "ValueError"}


def test_lambda_event_invocation(fake_lambda: list[tuple[str, str, bytes]]) -> None:
    result = run([{"id": "f", "type": "lambda", "function_name": "echo", "invocation_type": "Event", "payload": [1]}])
    assert result.error is None and result.steps[0].output == {"status_code": 202}
    assert fake_lambda[0][1] == "Event"


def test_lambda_throttling_is_retryable_and_not_retried_by_the_sdk(fake_lambda: list[tuple[str, str, bytes]]) -> None:
    result = run([{"id": "f", "type": "lambda", "function_name": "busy"}])
    assert result.error is not None and result.error["type"] == "aws_error" and result.retryable
    assert "TooManyRequests" in result.error["message"]
    assert len(fake_lambda) == 1  # one Invoke: a retry is the run's decision, not the SDK's


def test_own_function_is_refused(moto_aws: None) -> None:
    result = run(
        [
            {
                "id": "f",
                "type": "lambda",
                "function_name": "arn:aws:lambda:us-east-1:123456789012:function:tasks-api-dev-worker",
            }
        ]
    )
    assert result.error is not None and result.error["type"] == "egress_blocked"


# ---------------------------------------------------------------------------- bounded templates


def test_self_reference_cannot_form_a_cycle_or_grow_without_bound() -> None:
    import json as _json

    steps: list[dict[str, Any]] = [{"id": "all", "type": "log", "message": "{{ @ }}"}]
    # Each step doubles the text of the one before (to_string of the whole context): without
    # caps this is 2^n; with them a step that would render past the cap fails, and the run ends.
    steps += [{"id": f"grow{i}", "type": "log", "message": "{{ to_string(@) }}{{ to_string(@) }}"} for i in range(12)]
    result = run(steps)
    failed = [s for s in result.steps if s.status == "failed"]
    assert failed and failed[0].error is not None and failed[0].error["type"] == "template_error"
    assert result.error is not None and result.retryable is False
    # The whole record can be serialised (no cycle), and stays small.
    text = _json.dumps([s.__dict__ for s in result.steps], default=str)
    assert len(text) < 20 * settings().max_step_output_bytes * 2


# ---------------------------------------------------------------------------- egress scoped per agent


@pytest.fixture()
def deny(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set TASKAPI_EGRESS_DENY_PORTS (as the local stack does for its own API and emulator ports)."""

    def set_deny(ports: str) -> None:
        monkeypatch.setenv("TASKAPI_EGRESS_DENY_PORTS", ports)

    monkeypatch.delenv("TASKAPI_EGRESS_DENY_PORTS", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    yield set_deny


def _get(url: str) -> dict[str, Any]:
    return {"id": "a", "type": "http", "method": "GET", "url": url}


def test_allow_entry_with_a_port_opens_only_that_port(server: Server, allow: Any) -> None:
    allow(f"127.0.0.1:{server.port}")
    assert run([_get(server.base + "/text")]).error is None
    other = Server()
    try:
        allow(f"127.0.0.1:{server.port},localhost:{other.port}")  # the name, not its address
        result = run([_get(other.base + "/text")])
        assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
        assert f"port {other.port}" in result.error["message"]
        assert other.requests == []
    finally:
        other.close()
    assert len(server.requests) == 1


def test_cidr_with_a_port(server: Server, allow: Any) -> None:
    allow(f"127.0.0.0/8:{server.port}")
    assert run([_get(server.base + "/text")]).error is None
    allow(f"127.0.0.0/8:{server.port + 1 if server.port < 65535 else 1}")
    result = run([_get(server.base + "/text")])
    assert result.error is not None and result.error["type"] == "egress_blocked"
    assert len(server.requests) == 1


def test_denied_port_beats_every_allow_list(server: Server, allow: Any, deny: Any) -> None:
    allow(f"127.0.0.1,127.0.0.1:{server.port},localhost")
    deny(f"1,{server.port}")
    agent = AgentEgress(http_allow=(f"127.0.0.1:{server.port}",))
    for url in (server.base + "/text", f"http://localhost:{server.port}/text"):
        result = run_pipeline({"steps": [_get(url)]}, ctx(egress=agent), emit=Emits())
        assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
        assert "belongs to the service itself" in result.error["message"]
    assert server.requests == []


def test_redirect_to_a_denied_port_is_blocked(server: Server, allow: Any, deny: Any) -> None:
    allow("127.0.0.1")
    own = Server()  # stands for the emulator
    try:
        deny(str(own.port))
        to = own.base + "/text"
        result = run([_get(f"{server.base}/redirect?code=302&to={to}")])
        assert result.error is not None and result.error["type"] == "egress_blocked"
        assert own.requests == [] and len(server.requests) == 1
    finally:
        own.close()


def test_lambda_runtime_api_port_is_always_denied(server: Server, allow: Any, deny: Any, monkeypatch: Any) -> None:
    allow("127.0.0.1")
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{server.port}")
    result = run([_get(server.base + "/2018-06-01/runtime/invocation/next")])
    assert result.error is not None and result.error["type"] == "egress_blocked"
    assert server.requests == []


def test_agent_http_allow_adds_to_the_operator_list(server: Server, allow: Any) -> None:
    # No operator allow-list: only the agent whose entry names this port reaches it.
    opened = ctx(egress=AgentEgress(http_allow=(f"127.0.0.1:{server.port}",)))
    assert run_pipeline({"steps": [_get(server.base + "/text")]}, opened, emit=Emits()).error is None
    for other in (AgentEgress(), AgentEgress(http_allow=("10.0.0.0/8", "localhost"))):
        result = run_pipeline({"steps": [_get(server.base + "/text")]}, ctx(egress=other), emit=Emits())
        assert result.error is not None and result.error["type"] == "egress_blocked"
    assert len(server.requests) == 1


def test_aws_target_not_in_the_agents_list_is_blocked(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="agent-b-inbox")["QueueUrl"]
    step = {"id": "q", "type": "sqs", "queue_url": url, "message_body": "x"}
    for egress in (AgentEgress(), AgentEgress(aws_targets=(url + "-other", url[:-1], "arn:*"))):
        result = run_pipeline({"steps": [step]}, ctx(egress=egress), emit=Emits())
        assert result.error is not None and result.error["type"] == "egress_blocked" and not result.retryable
        assert "aws_targets" in result.error["message"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    # Exactly listed, or by a `*` glob: sent.
    for egress in (AgentEgress(aws_targets=(url,)), AgentEgress(aws_targets=(url.rsplit("/", 1)[0] + "/agent-b-*",))):
        assert run_pipeline({"steps": [step]}, ctx(egress=egress), emit=Emits()).error is None
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 2


def test_aws_target_is_checked_after_templates(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="agent-templated")["QueueUrl"]
    allowed = AgentEgress(aws_targets=(url.rsplit("/", 1)[0] + "/agent-templated",))
    step = {"id": "q", "type": "sqs", "queue_url": "{{ input.q }}", "message_body": "x"}
    ok = ctx(egress=allowed, input={"q": url})
    assert run_pipeline({"steps": [step]}, ok, emit=Emits()).error is None
    bad = ctx(egress=allowed, input={"q": url + "-x"})
    result = run_pipeline({"steps": [step]}, bad, emit=Emits())
    assert result.error is not None and result.error["type"] == "egress_blocked"


def test_every_aws_step_type_needs_its_target_listed(moto_aws: None) -> None:
    steps = [
        {"id": "f", "type": "lambda", "function_name": "echo"},
        {"id": "n", "type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:t", "message": "x"},
        {"id": "e", "type": "eventbridge", "source": "a.b", "detail_type": "x"},
        {"id": "q", "type": "sqs", "queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "message_body": "x"},
    ]
    for step in steps:
        result = run_pipeline({"steps": [step]}, ctx(egress=AgentEgress()), emit=Emits())
        assert result.error is not None and result.error["type"] == "egress_blocked", step


def test_own_resources_stay_refused_even_when_listed(moto_aws: None) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName=settings().queue_name("low"))["QueueUrl"]
    step = {"id": "q", "type": "sqs", "queue_url": url, "message_body": "forged run"}
    result = run_pipeline({"steps": [step]}, ctx(egress=AgentEgress(aws_targets=("*",))), emit=Emits())
    assert result.error is not None and result.error["type"] == "egress_blocked"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
