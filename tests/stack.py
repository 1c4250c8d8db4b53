"""The local stack as a user runs it: `python -m local` in a subprocess, driven over real HTTP.

One stack per test session (start-up takes a few seconds: moto, CloudFormation, the app). Its
stdout (JSON log events) is collected so tests can look at what the tick loop and the pollers did,
and printed when start-up fails. Teardown checks the stop contract: SIGTERM → exit 0 within 15 s,
and no moto process left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.secrets_seen import CHECKER

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
TICK_SECONDS = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalStack:
    base_url: str
    admin_token: str
    moto_endpoint: str
    tick_seconds: int
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """How the secrets checker names this stack's output."""
        return f"stack:{urlsplit(self.base_url).port}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def events(self, message: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events printed so far (optionally only those with this `message`)."""
        out = []
        for line in list(self.lines):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and (message is None or ev.get("message") == message):
                out.append(ev)
        return out

    def moto_pid(self) -> int | None:
        ready = self.events("emulator_ready")
        return int(ready[0]["pid"]) if ready else None

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


LAUNCHED: list[LocalStack] = []  # every stack this test process started, for the secrets checker


def launch(admin_token: str, **settings: str) -> LocalStack:
    """`python -m local` on free ports with `settings` (TASKAPI_… variables) over a clean AWS
    environment (the stack forces fake credentials anyway), INFO logs whatever the other suites
    set (tests read the stack's events); returns once /health answers 200."""
    port, moto_port = _free_port(), _free_port()
    CHECKER.secret("admin token", admin_token)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TASKAPI_", "POWERTOOLS_"))}
    env.update(
        POWERTOOLS_LOG_LEVEL="INFO",
        PORT=str(port),
        MOTO_PORT=str(moto_port),
        TASKAPI_ADMIN_TOKEN=admin_token,
        TASKAPI_TICK_SECONDS=str(TICK_SECONDS),
        PYTHONUNBUFFERED="1",
        **settings,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "local"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = LocalStack(f"http://127.0.0.1:{port}", admin_token, f"http://127.0.0.1:{moto_port}", TICK_SECONDS, proc)
    LAUNCHED.append(stack)

    def drain() -> None:
        # Every line (the app's, the pollers', the tick's and the moto server's) also goes to
        # the session's secrets checker.
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.lines.append(line.rstrip("\n"))
            CHECKER.line(stack.source, stack.lines[-1])

    threading.Thread(target=drain, name="local-stack-output", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            time.sleep(1)  # let the reader collect the last lines
            pytest.fail(f"python -m local exited with {proc.returncode} before it was ready:\n{stack.output()}")
        try:
            if requests.get(f"{stack.base_url}/health", timeout=2).status_code == 200:
                return stack
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"python -m local was not ready within {START_TIMEOUT:.0f} s:\n{stack.output()}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    stack = launch(
        "e2e-admin-" + secrets.token_urlsafe(24),
        TASKAPI_PREFIX="tasksapi-e2e-",
        TASKAPI_STATE="memory",  # never the developer's .data/ (tests/e2e/test_restart.py keeps its own)
        TASKAPI_EGRESS_ALLOW="127.0.0.1",  # the e2e HTTP targets listen on loopback
        # The fuzzer sends thousands of writes a minute; rate limits have tests of their own.
        TASKAPI_RATE_WRITES_PER_MINUTE="60000",
        TASKAPI_RATE_EVENTS_PER_MINUTE="60000",
    )
    proc = stack.proc
    port, moto_port = urlsplit(stack.base_url).port, urlsplit(stack.moto_endpoint).port
    assert port is not None and moto_port is not None
    try:
        yield stack

        moto_pid = stack.moto_pid()
        assert moto_pid is not None, f"no emulator_ready event in the output:\n{stack.output()}"
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"python -m local did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM:\n{stack.output()}")
        time.sleep(0.5)  # the reader's last lines
        assert rc == 0, f"python -m local exited with {rc} on SIGTERM:\n{stack.output()}"
        assert not _alive(moto_pid), f"the moto server (pid {moto_pid}) outlived python -m local"
        assert not _port_open(moto_port), "something still listens on the moto port"
        assert not _port_open(port), "something still listens on the API port"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        pid = stack.moto_pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
