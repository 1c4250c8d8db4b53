"""`tasks-mcp` driven by the official MCP client (`mcp.Client`) against the local stack: the tool
list and schemas, a call of each tool, resources, and the errors.

The session that calls every tool runs the installed entry point over stdio, exactly as Claude
Desktop or Cursor start it, and the streamable HTTP transport is the entry point too; the schema
and error checks talk to the same server (`build_server`) in-process, over the SDK's in-memory
transport, sparing a subprocess that spends seconds importing before its first answer."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tasksapi
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextResourceContents
from tasksapi.mcp_server import build_server

from tests.clients.conftest import BIN, clean_env, finished, run_async
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

TOOLS = {
    "create_task",
    "list_tasks",
    "get_task",
    "update_task",
    "pause_task",
    "resume_task",
    "snooze_task",
    "cancel_task",
    "run_task_now",
    "preview_schedule",
    "list_runs",
    "get_run",
    "send_event",
}
PIPELINE = {"steps": [{"id": "say", "type": "log", "message": "hello {{ input.who }}"}]}


def session(env: dict[str, str], work: Callable[[Client], Awaitable[None]], *args: str) -> None:
    """`work` over stdio with `.venv/bin/tasks-mcp` in `env`."""
    connect(StdioServerParameters(command=str(BIN / "tasks-mcp"), args=list(args), env=env), work)


def connect(server: StdioServerParameters | MCPServer, work: Callable[[Client], Awaitable[None]]) -> None:
    async def go() -> None:
        async with Client(server, read_timeout_seconds=60) as client:
            await work(client)

    run_async(go())


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert text and "Traceback" not in text
    return text


@pytest.fixture(scope="module")
def env(
    local_stack: LocalStack, agent: tasksapi.AgentCreated, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return clean_env(tmp_path_factory.mktemp("mcp"), TASKS_API_URL=local_stack.base_url, TASKS_API_TOKEN=agent.token)


def _undescribed(schema: dict[str, Any]) -> list[str]:
    """Input properties, and properties of the models they refer to, that have no description."""
    missing = [name for name, prop in schema.get("properties", {}).items() if not prop.get("description")]
    for model, sub in schema.get("$defs", {}).items():
        missing += [
            f"{model}.{name}" for name, prop in sub.get("properties", {}).items() if not prop.get("description")
        ]
    return missing


@pytest.fixture
def server(local_stack: LocalStack, agent: tasksapi.AgentCreated) -> MCPServer:
    """The server `tasks-mcp` runs, configured for the module's agent (one per test: its HTTP
    client belongs to the test's event loop)."""
    return build_server(local_stack.base_url, agent.token)


def test_tools_are_listed_with_described_schemas(server: MCPServer) -> None:
    async def work(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40, tool.name
            schema = tool.input_schema
            assert schema["type"] == "object"
            undescribed = _undescribed(schema)
            assert not undescribed, f"{tool.name}: fields without a description: {undescribed}"
            assert tool.output_schema is not None, f"{tool.name} has no structured output"
        create = tools["create_task"]
        assert create.description is not None
        words = " ".join(create.description.split())
        for must in ("30 2 * * *", "FREQ=WEEKLY", "DST rule", "first instant after the gap", "priority 1–9", "steps"):
            assert must in words, must
        props = create.input_schema["properties"]
        assert set(create.input_schema["required"]) == {"title", "schedule_kind", "payload"}
        assert "created_by" not in create.input_schema["required"]
        assert props["schedule_kind"]["enum"] == ["cron", "rrule", "once", "event"]
        priority = next(s for s in props["priority"]["anyOf"] if s.get("type") == "integer")
        assert (priority["minimum"], priority["maximum"]) == (1, 9)
        assert tools["snooze_task"].input_schema["properties"]["delay_seconds"]["maximum"] == 604_800
        assert tools["get_task"].annotations is not None and tools["get_task"].annotations.read_only_hint
        assert tools["cancel_task"].annotations is not None and tools["cancel_task"].annotations.destructive_hint
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"tasks://tasks/{task_id}", "tasks://tasks/{task_id}/runs/{run_id}"}

    connect(server, work)


def test_an_agent_session_calls_every_tool(
    env: dict[str, str], client: tasksapi.Client, agent: tasksapi.AgentCreated
) -> None:
    async def work(mcp: Client) -> None:
        # GIVEN a schedule checked first: 02:30 does not exist on 28 March in Chisinau
        preview = ok(
            await mcp.call_tool(
                "preview_schedule",
                {
                    "schedule_kind": "cron",
                    "schedule_expr": "30 2 * * *",
                    "timezone": "Europe/Chisinau",
                    "count": 3,
                    "after": "2027-03-27T00:00:00Z",
                },
            )
        )
        assert [f["utc"] for f in preview["next_runs"]] == [
            "2027-03-27T00:30:00Z",
            "2027-03-28T00:00:00Z",
            "2027-03-28T23:30:00Z",
        ]
        assert [f["dst"] is not None for f in preview["next_runs"]] == [False, True, False]

        # WHEN the agent creates, inspects, changes, snoozes, runs and cancels a task
        task = ok(
            await mcp.call_tool(
                "create_task",
                {
                    "title": "Nightly report",
                    "description": "made over MCP",
                    "schedule_kind": "cron",
                    "schedule_expr": "30 2 * * *",
                    "timezone": "Europe/Chisinau",
                    "payload": PIPELINE,
                    "idempotency_key": "mcp-nightly",
                },
            )
        )
        assert task["created_by"] == agent.agent_id and task["status"] == "active"
        tid = task["id"]
        again = ok(
            await mcp.call_tool(
                "create_task",
                {
                    "title": "Nightly report",
                    "schedule_kind": "cron",
                    "schedule_expr": "30 2 * * *",
                    "timezone": "Europe/Chisinau",
                    "payload": PIPELINE,
                    "description": "made over MCP",
                    "idempotency_key": "mcp-nightly",
                },
            )
        )
        assert again["id"] == tid
        listed = ok(await mcp.call_tool("list_tasks", {"status": "active"}))
        assert tid in [t["id"] for t in listed["tasks"]] and "next_offset" in listed
        assert ok(await mcp.call_tool("get_task", {"task_id": tid}))["version"] == 1
        changed = ok(await mcp.call_tool("update_task", {"task_id": tid, "priority": 2, "if_match": 1}))
        assert changed["priority"] == 2 and changed["version"] == 2
        assert ok(await mcp.call_tool("pause_task", {"task_id": tid}))["status"] == "paused"
        assert ok(await mcp.call_tool("resume_task", {"task_id": tid}))["status"] == "active"
        snoozed = ok(
            await mcp.call_tool("snooze_task", {"task_id": tid, "delay_seconds": 3600, "reason": "maintenance"})
        )
        assert snoozed["snooze_reason"] == "maintenance" and snoozed["snoozed_until"]
        own = ok(await mcp.call_tool("preview_schedule", {"task_id": tid, "count": 2}))
        assert own["timezone"] == "Europe/Chisinau" and len(own["next_runs"]) == 2
        run = ok(await mcp.call_tool("run_task_now", {"task_id": tid, "input": {"who": "mcp"}}))
        assert run["trigger"] == "run_now"
        finished(client, tid, run["id"])
        runs = ok(await mcp.call_tool("list_runs", {"task_id": tid}))
        assert [r["id"] for r in runs["runs"]] == [run["id"]] and runs["next_cursor"] is None
        detail = ok(await mcp.call_tool("get_run", {"task_id": tid, "run_id": run["id"]}))
        assert detail["status"] == "succeeded" and detail["steps"][0]["output"] == "hello mcp"

        resource = await mcp.read_resource(f"tasks://tasks/{tid}")
        content = resource.contents[0]
        assert isinstance(content, TextResourceContents) and json.loads(content.text)["id"] == tid
        run_res = await mcp.read_resource(f"tasks://tasks/{tid}/runs/{run['id']}")
        run_content = run_res.contents[0]
        assert isinstance(run_content, TextResourceContents) and json.loads(run_content.text)["status"] == "succeeded"

        listener = ok(
            await mcp.call_tool(
                "create_task",
                {"title": "On order", "schedule_kind": "event", "schedule_expr": "order.*", "payload": PIPELINE},
            )
        )
        sent = ok(await mcp.call_tool("send_event", {"name": "order.created", "data": {"id": 42}}))
        assert [r["task_id"] for r in sent["runs"]] == [listener["id"]]
        assert ok(await mcp.call_tool("cancel_task", {"task_id": tid}))["status"] == "canceled"

    session(env, work)
    # THEN the service holds what the session did
    assert client.tasks.get(next(t.id for t in client.tasks.list() if t.title == "Nightly report")).status == "canceled"


def test_bad_input_is_a_tool_error_naming_the_field(server: MCPServer, client: tasksapi.Client) -> None:
    canceled = client.tasks.create(title="gone", description="", schedule_kind="event", payload=PIPELINE)
    client.tasks.cancel(canceled.id)
    base = {"title": "x", "schedule_kind": "cron", "schedule_expr": "0 * * * *", "payload": PIPELINE}

    async def work(mcp: Client) -> None:
        # rejected by the tool's input schema, before any request
        text = error_text(await mcp.call_tool("create_task", {**base, "priority": 12}))
        assert "priority" in text and "less than or equal to 9" in text
        text = error_text(await mcp.call_tool("create_task", {"schedule_kind": "cron", "payload": PIPELINE}))
        assert "title" in text and "required" in text.lower()
        text = error_text(await mcp.call_tool("create_task", {**base, "schedule_kind": "hourly"}))
        assert "schedule_kind" in text and "'cron'" in text
        text = error_text(await mcp.call_tool("snooze_task", {"task_id": canceled.id, "delay_seconds": 0}))
        assert "delay_seconds" in text
        text = error_text(await mcp.call_tool("create_task", {**base, "payload": {"steps": []}}))
        assert "steps" in text
        # rejected by the service: its problem+json, field by field
        text = error_text(await mcp.call_tool("create_task", {**base, "schedule_expr": "61 2 * * *"}))
        assert "400" in text and "schedule_expr" in text and "61" in text
        text = error_text(await mcp.call_tool("create_task", {**base, "timezone": "Mars/Olympus"}))
        assert "timezone" in text
        text = error_text(
            await mcp.call_tool("create_task", {**base, "payload": {"steps": [{"id": "a", "type": "teleport"}]}})
        )
        assert "steps[0]" in text
        text = error_text(
            await mcp.call_tool("create_task", {**base, "created_by": "00000000-0000-4000-8000-000000000000"})
        )
        assert "403" in text
        text = error_text(await mcp.call_tool("get_task", {"task_id": "00000000-0000-4000-8000-000000000000"}))
        assert "404" in text and "list_tasks" in text
        text = error_text(await mcp.call_tool("get_task", {"task_id": "../../agents"}))
        assert "404" in text
        text = error_text(await mcp.call_tool("update_task", {"task_id": canceled.id, "priority": 2}))
        assert "409" in text
        text = error_text(await mcp.call_tool("update_task", {"task_id": canceled.id}))
        assert "nothing to change" in text
        text = error_text(await mcp.call_tool("preview_schedule", {"schedule_kind": "cron"}))
        assert "schedule_expr" in text
        text = error_text(await mcp.call_tool("no_such_tool", {}))
        assert "no_such_tool" in text
        # and the server is still there
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        assert ok(await mcp.call_tool("get_task", {"task_id": canceled.id}))["status"] == "canceled"

    connect(server, work)


def test_an_unconfigured_server_starts_and_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def work(mcp: Client) -> None:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        text = error_text(await mcp.call_tool("list_tasks", {}))
        assert "not configured" in text and "TASKS_API_URL" in text

    for var in ("TASKS_API_URL", "TASKS_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    connect(build_server(), work)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_streamable_http_transport(env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "tasks-mcp"), "--transport", "streamable-http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "tasks-mcp did not listen"
            time.sleep(0.2)

        async def go() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=60) as mcp:
                assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
                page = ok(await mcp.call_tool("list_tasks", {"limit": 1}))
                assert "tasks" in page

        run_async(go())
    finally:
        proc.terminate()
        proc.wait(15)
