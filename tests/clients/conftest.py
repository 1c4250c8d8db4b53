"""The clients against the running local stack (`python -m local`, started once per session
by the e2e fixture), each test file with agents of its own."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import tasksapi

from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def admin(local_stack: LocalStack) -> Iterator[tasksapi.Client]:
    with tasksapi.Client(local_stack.base_url, local_stack.admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def agent(admin: tasksapi.Client, request: pytest.FixtureRequest) -> tasksapi.AgentCreated:
    made = admin.agents.create(f"clients-{request.module.__name__.rsplit('.', 1)[-1]}")
    CHECKER.agent({"token": made.token, "signing_secret": made.signing_secret})
    return made


@pytest.fixture(scope="module")
def client(local_stack: LocalStack, agent: tasksapi.AgentCreated) -> Iterator[tasksapi.Client]:
    with tasksapi.Client(local_stack.base_url, agent.token) as c:
        yield c


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment for a CLI or MCP subprocess: none of the caller's TASKS_* settings, and
    a config path that does not exist (so a developer's own config file is never read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKS_")}
    env.update(TASKS_CONFIG=str(tmp / "no-config.toml"), NO_COLOR="1", COLUMNS="200", **extra)
    return env


LOG_PIPELINE = {"steps": [{"id": "say", "type": "log", "message": "hello {{ input.who }}"}]}


def finished(client: tasksapi.Client, task_id: str, run_id: str, timeout: float = 30) -> tasksapi.Run:
    """The run once it has finished (succeeded, failed or skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.runs.get(task_id, run_id)
        if run.status in ("succeeded", "failed", "skipped"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {client.runs.get(task_id, run_id)}")


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a thread of its own: another suite in the same worker (a browser test's
    sync API, say) may have left an event loop running on this one, where asyncio.run refuses."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
