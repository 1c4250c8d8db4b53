"""The local server refuses what API Gateway would, before it costs a thread or memory: an
oversized Content-Length (413 before a byte of the body is read), a body that never arrives
(408), and methods no route has (405): all problem+json, never http.server's HTML."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest
import requests

from tests.stack import LocalStack

pytestmark = pytest.mark.e2e


def _raw(stack: LocalStack, request: bytes, read_timeout: float = 20.0) -> tuple[int, dict[str, str], bytes, float]:
    url = urlparse(stack.base_url)
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=read_timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return status, headers, body, elapsed


def test_an_oversized_content_length_is_refused_before_the_body_is_read(local_stack: LocalStack) -> None:
    status, headers, body, elapsed = _raw(
        local_stack,
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 2000000000\r\n\r\n{",
    )
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 413 and "2000000000" in json.loads(body)["detail"]
    assert elapsed < 5  # answered at once, not after reading (or waiting for) 2 GB


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "²"])
def test_a_content_length_that_is_not_a_number_is_a_400(local_stack: LocalStack, value: str) -> None:
    request = f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n".encode()
    status, headers, body, _ = _raw(local_stack, request)
    assert status == 400 and headers["content-type"] == "application/problem+json" and json.loads(body)["status"] == 400


def test_a_body_that_never_arrives_times_out_with_408(local_stack: LocalStack) -> None:
    status, headers, body, elapsed = _raw(
        local_stack, b'POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"na'
    )
    assert status == 408 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 408 and elapsed < 20
    # The server is still serving.
    assert requests.get(f"{local_stack.base_url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "BREW"])
def test_an_unknown_method_is_a_405_problem(local_stack: LocalStack, method: str) -> None:
    r = requests.request(method, f"{local_stack.base_url}/tasks", timeout=5)
    assert r.status_code == 405 and r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 405 and method in r.json()["detail"] and "GET" in r.headers["Allow"]


def test_a_malformed_request_line_is_a_problem_not_html(local_stack: LocalStack) -> None:
    status, headers, body, _ = _raw(local_stack, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert status == 414 and headers["content-type"] == "application/problem+json" and b"<html" not in body.lower()
