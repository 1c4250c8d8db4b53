"""The `tasks` CLI against the running local stack, over real HTTP.

Most commands run in this process through typer's CliRunner, on the very `app` the entry point
runs: a `.venv/bin/tasks` subprocess spends ~1.5 s of CPU importing httpx, rich and typer before
its one request (ten seconds and more on a busy two-core machine), and this file makes sixty
calls. `test_the_installed_entry_point` runs the real executable: exit codes, stdout and stderr
kept apart, the environment and the config file read by a fresh process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tasksapi
from tasksapi import cli as tasks_cli
from tasksapi.cli import app
from typer.testing import CliRunner

from tests.clients.conftest import BIN, clean_env, finished
from tests.stack import LocalStack

pytestmark = pytest.mark.e2e

TASKS = str(BIN / "tasks")
RUNNER = CliRunner()
# rich picks its colour system when tasksapi.cli is imported (from pytest's terminal under -s):
# what is checked here is the text.
_SGR = re.compile(r"\x1b\[[0-9;]*m")

TASK_YAML = """\
title: Nightly report
description: made by the CLI tests
schedule_kind: cron
schedule_expr: "30 2 * * *"
timezone: Europe/Chisinau
payload:
  steps:
    - {id: note, type: log, message: "hello {{ input.who }}"}
"""


def cli_env(tmp: Path, **extra: str) -> dict[str, str | None]:
    """`clean_env` as CliRunner overrides: the caller's TASKS_* settings removed (None)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKS_")}
    return {**unset, **clean_env(tmp, **extra)}


def invoke(
    env: dict[str, str | None], cwd: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """One `tasks …` command in-process; an exception escaping it fails the test with its traceback."""
    with contextlib.chdir(cwd):
        r = RUNNER.invoke(app, list(args), input=stdin, env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(["tasks", *args], r.exit_code, _SGR.sub("", r.stdout), _SGR.sub("", r.stderr))


class Cli:
    def __init__(self, url: str, token: str, tmp: Path) -> None:
        self.env = cli_env(tmp, TASKS_API_URL=url, TASKS_API_TOKEN=token)
        self.tmp = tmp

    def __call__(
        self, *args: str, ok: bool = True, stdin: str | None = None, **env: str | None
    ) -> subprocess.CompletedProcess[str]:
        p = invoke({**self.env, **env}, self.tmp, *args, stdin=stdin)
        if ok:
            assert p.returncode == 0, f"tasks {' '.join(args)} → {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """A failure: the exit code, one readable line on stderr, no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def wide_consoles() -> Iterator[None]:
    """The CLI's rich consoles take their width from COLUMNS when tasksapi.cli is imported (80 in
    an xdist worker), where `tasks` in a shell reads its own: give them the COLUMNS=200 of
    `clean_env`, so a table's long ids are not folded, and put the width back after."""
    consoles = (tasks_cli.out, tasks_cli.err)
    before = [c.width for c in consoles]
    for c in consoles:
        c.width = 200
    yield
    for c, width in zip(consoles, before, strict=True):
        c.width = width


@pytest.fixture(scope="module")
def cli(local_stack: LocalStack, agent: tasksapi.AgentCreated, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(local_stack.base_url, agent.token, tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def admin_cli(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(local_stack.base_url, local_stack.admin_token, tmp_path_factory.mktemp("cli-admin"))


def test_create_from_yaml_then_every_task_command(
    cli: Cli, client: tasksapi.Client, agent: tasksapi.AgentCreated
) -> None:
    (cli.tmp / "task.yaml").write_text(TASK_YAML)
    task = cli.json("create", "-f", "task.yaml")
    assert task["title"] == "Nightly report" and task["created_by"] == agent.agent_id and task["version"] == 1
    tid = task["id"]

    listed = cli.json("ls")
    assert tid in [t["id"] for t in listed]
    table = cli("ls").stdout
    assert tid in table and "Nightly report" in table and "active" in table

    assert cli.json("get", tid)["id"] == tid

    updated = cli.json("update", tid, "--set", "priority=2", "--set", "title=Nightly v2", "--if-match", "1")
    assert updated["priority"] == 2 and updated["title"] == "Nightly v2" and updated["version"] == 2
    one_line_error(cli("update", tid, "--set", "priority=3", "--if-match", "1", ok=False), 1, "412")
    (cli.tmp / "change.yaml").write_text("description: changed from a file\n")
    assert cli.json("update", tid, "-f", "change.yaml")["description"] == "changed from a file"
    own = cli.json("preview", "--task", tid, "--after", "2027-03-27T00:00:00Z", "--count", "2")
    assert [f["dst"] is not None for f in own["next_runs"]] == [False, True]  # the task's zone and expression

    assert f"{tid}: paused" in cli("pause", tid).stdout
    assert client.tasks.get(tid).status == "paused"
    assert cli.json("resume", tid)["status"] == "active"
    snoozed = cli.json("snooze", tid, "1h30m", "--reason", "db maintenance")
    assert snoozed["snooze_reason"] == "db maintenance" and snoozed["snoozed_until"]
    assert client.tasks.get(tid).snoozed_until is not None

    run = cli.json("run", tid, "--input", '{"who": "cli"}')
    assert run["task_id"] == tid and run["trigger"] == "run_now"
    assert finished(client, tid, run["id"]).status == "succeeded"
    runs = cli.json("runs", tid)
    assert [r["id"] for r in runs] == [run["id"]] and runs[0]["status"] == "succeeded"
    assert run["id"] in cli("runs", tid).stdout
    detail = cli.json("run-detail", tid, run["id"])
    assert detail["steps"][0]["output"] == "hello cli"
    shown = cli("run-detail", tid, run["id"]).stdout
    assert "hello cli" in shown and "note" in shown

    assert cli.json("cancel", tid)["status"] == "canceled"
    one_line_error(cli("update", tid, "--set", "priority=4", ok=False), 1, "409")


def test_runs_watch_refreshes_a_live_table(cli: Cli, client: tasksapi.Client) -> None:
    task = client.tasks.create(
        title="watched",
        description="",
        schedule_kind="event",
        payload={"steps": [{"id": "s", "type": "log", "message": "x"}]},
    )
    run = client.tasks.run_now(task.id)
    finished(client, task.id, run.id)
    lines = cli("runs", task.id, "--watch", "--count", "2", "--interval", "0.2", "--json").stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(line)[0]["id"] == run.id for line in lines)
    live = cli("runs", task.id, "--watch", "--count", "2", "--interval", "0.2").stdout
    assert run.id in live and "Ctrl-C stops" in live


def test_create_reads_json_and_stdin_and_defaults_to_the_agent(cli: Cli, agent: tasksapi.AgentCreated) -> None:
    body = {
        "title": "from stdin",
        "description": "",
        "schedule_kind": "once",
        "schedule_expr": "2099-01-01T09:00:00",
        "payload": {"steps": [{"id": "s", "type": "log", "message": "x"}]},
    }
    (cli.tmp / "t.json").write_text(json.dumps(body))
    assert cli.json("create", "-f", "t.json")["created_by"] == agent.agent_id
    made = json.loads(cli("create", "-f", "-", "--json", "--idempotency-key", "cli-k1", stdin=json.dumps(body)).stdout)
    again = json.loads(cli("create", "-f", "-", "--json", "--idempotency-key", "cli-k1", stdin=json.dumps(body)).stdout)
    assert made["id"] == again["id"] and made["title"] == "from stdin"


def test_preview_shows_local_and_utc_and_marks_dst(cli: Cli) -> None:
    args = ("preview", "30 2 * * *", "--kind", "cron", "--tz", "Europe/Chisinau", "--after", "2027-03-27T00:00:00Z")
    got = cli.json(*args, "--count", "3")
    assert got["description"] == "At 02:30 AM (Europe/Chisinau)"
    assert [(f["utc"], f["local"]) for f in got["next_runs"]] == [
        ("2027-03-27T00:30:00Z", "2027-03-27T02:30:00+02:00"),
        ("2027-03-28T00:00:00Z", "2027-03-28T03:00:00+03:00"),
        ("2027-03-28T23:30:00Z", "2027-03-29T02:30:00+03:00"),
    ]
    assert [bool(f["dst"]) for f in got["next_runs"]] == [False, True, False]
    assert "moved by DST" in got["next_runs"][1]["dst"]
    table = cli(*args, "--count", "3").stdout
    assert "2027-03-28 03:00:00 EEST" in table and "2027-03-28 00:00:00Z" in table and "moved by DST" in table

    fall = cli.json(
        "preview", "30 2 * * *", "--tz", "Europe/Chisinau", "--after", "2027-10-30T12:00:00Z", "--count", "1"
    )
    assert fall["next_runs"][0]["dst"] == "DST repeated hour: first occurrence"
    hourly = cli.json(
        "preview", "0 * * * *", "--tz", "Europe/Chisinau", "--after", "2027-03-27T23:30:00Z", "--count", "2"
    )
    assert [f["dst"] for f in hourly["next_runs"]] == [None, None]  # hourly follows real time: nothing moved
    one_line_error(cli("preview", "61 * * * *", ok=False), 1, "400", "schedule_expr")


def test_events_send(cli: Cli, client: tasksapi.Client) -> None:
    task = client.tasks.create(
        title="on cli event",
        description="",
        schedule_kind="event",
        schedule_expr="cli.*",
        payload={"steps": [{"id": "s", "type": "log", "message": "{{ event.data.n }}"}]},
    )
    sent = cli.json("events", "send", "cli.ping", "--data", '{"n": 7}')
    assert [r["task_id"] for r in sent["runs"]] == [task.id]
    assert finished(client, task.id, sent["runs"][0]["run_id"]).steps[0].output == 7
    assert "0 run(s) started" in cli("events", "send", "other.thing").stdout


def test_agents_admin_commands(admin_cli: Cli, cli: Cli) -> None:
    made = admin_cli.json("agents", "create", "cli-made")
    assert made["token"].startswith("tapi_") and made["name"] == "cli-made"
    assert made["agent_id"] in [a["agent_id"] for a in admin_cli.json("agents", "ls")]
    assert made["agent_id"] in admin_cli("agents", "ls").stdout
    set_ = admin_cli.json(
        "agents", "egress", made["agent_id"], "--set", "--aws-target", "arn:*:q", "--http-allow", "10.0.0.1:80"
    )
    assert set_ == {"agent_id": made["agent_id"], "aws_targets": ["arn:*:q"], "http_allow": ["10.0.0.1:80"]}
    assert "10.0.0.1:80" in admin_cli("agents", "egress", made["agent_id"]).stdout
    assert admin_cli.json("agents", "egress", made["agent_id"], "--set")["aws_targets"] == []
    budget = admin_cli.json("agents", "budget", made["agent_id"], "--set", "--runs-per-minute", "12")
    assert budget["agent"]["runs_per_minute"] == 12 and budget["effective"]["runs_per_minute"] == 12
    assert "runs_per_minute: 12 (the agent's own)" in admin_cli("agents", "budget", made["agent_id"]).stdout
    assert admin_cli.json("agents", "budget", made["agent_id"], "--set")["agent"]["runs_per_minute"] is None
    assert admin_cli.json("agents", "revoke", made["agent_id"])["status"] == "revoked"
    one_line_error(cli("agents", "ls", ok=False), 1, "403")


def test_failures_are_one_readable_line(cli: Cli) -> None:
    one_line_error(cli("get", str(uuid.uuid4()), ok=False), 1, "404", "not found")
    one_line_error(cli("create", "-f", "missing.yaml", ok=False), 2, "missing.yaml")
    (cli.tmp / "broken.yaml").write_text("title: [\n")
    one_line_error(cli("create", "-f", "broken.yaml", ok=False), 2, "broken.yaml", "line")
    bad = cli("create", "-f", "-", ok=False, stdin='{"title": "", "priority": 12}')
    one_line_error(bad, 1, "400", "title", "priority")
    one_line_error(cli("snooze", str(uuid.uuid4()), "soon", ok=False), 2, "duration")
    one_line_error(cli("run", str(uuid.uuid4()), "--input", "[1]", ok=False), 2, "--input")
    one_line_error(cli("preview", ok=False), 2, "expression")

    one_line_error(cli("ls", ok=False, TASKS_API_URL=None, TASKS_API_TOKEN=None), 2, "TASKS_API_URL")
    down = cli("ls", ok=False, TASKS_API_URL="http://127.0.0.1:9", TASKS_API_TOKEN="tapi_x_y")
    one_line_error(down, 1, "ConnectError")
    one_line_error(cli("ls", ok=False, TASKS_API_TOKEN="tapi_nope_x"), 1, "401")


def _config(tmp: Path, stack: LocalStack, agent: tasksapi.AgentCreated) -> Path:
    config = tmp / "config.toml"
    config.write_text(
        f'url = "{stack.base_url}"\ntoken = "{agent.token}"\n\n[profiles.admin]\ntoken = "{stack.admin_token}"\n'
    )
    return config


def test_config_file_and_profiles(local_stack: LocalStack, agent: tasksapi.AgentCreated, tmp_path: Path) -> None:
    env = {**cli_env(tmp_path), "TASKS_CONFIG": str(_config(tmp_path, local_stack, agent))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return invoke(env, tmp_path, *args)

    as_agent = run("ls", "--json")
    assert as_agent.returncode == 0, as_agent.stderr
    one_line_error(run("agents", "ls"), 1, "403")
    as_admin = run("--profile", "admin", "agents", "ls", "--json")
    assert as_admin.returncode == 0 and agent.agent_id in as_admin.stdout
    one_line_error(run("--profile", "nope", "ls"), 2, "profiles.nope")


def test_the_installed_entry_point(local_stack: LocalStack, agent: tasksapi.AgentCreated, tmp_path: Path) -> None:
    """`.venv/bin/tasks` as a user's shell runs it: a fresh process reading its environment and
    config file, JSON alone on stdout, a failure's one line alone on stderr, and the exit codes
    (two runs: each costs seconds of imports; the usage errors' exit 2 is checked in-process)."""
    env = {**clean_env(tmp_path), "TASKS_CONFIG": str(_config(tmp_path, local_stack, agent))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TASKS, *args], env=env, capture_output=True, text=True, timeout=60)

    as_admin = run("--profile", "admin", "agents", "ls", "--json")
    assert as_admin.returncode == 0 and as_admin.stderr == "", as_admin.stderr
    assert agent.agent_id in [a["agent_id"] for a in json.loads(as_admin.stdout)]
    missing = run("get", str(uuid.uuid4()))
    assert missing.stdout == ""
    one_line_error(missing, 1, "404", "not found")
