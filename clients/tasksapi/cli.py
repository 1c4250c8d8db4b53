"""`tasks`: the Tasks API from a terminal, for the people who run the agents.

Every command takes `--json` (machine-readable output for scripts). A failure prints one
readable line on stderr and exits non-zero (1: the API or the network said no; 2: bad usage
or input) — never a traceback.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
import yaml
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from tasksapi import dst, models
from tasksapi.client import Client
from tasksapi.config import resolve
from tasksapi.errors import ApiError, ConfigError, Error

T = TypeVar("T")

app = typer.Typer(
    name="tasks",
    help="Drive the Tasks API: tasks, runs, schedule previews, events and (admin) agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
events_app = typer.Typer(help="Publish events.", no_args_is_help=True)
agents_app = typer.Typer(help="Agents (admin token).", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(agents_app, name="agents")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TaskId = Annotated[str, typer.Argument(help="The task id.")]


class _State:
    url: str | None = None
    token: str | None = None
    profile: str | None = None


state = _State()


@app.callback()
def _main(
    url: Annotated[
        str | None, typer.Option("--url", help="API URL (default: TASKS_API_URL or the config file).")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Bearer token (default: TASKS_API_TOKEN or the config file).")
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="A \\[profiles.NAME] section of the config file.")
    ] = None,
) -> None:
    state.url, state.token, state.profile = url, token, profile


# ---- plumbing ------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the message held
    err.print(f"[red]error:[/red] {escape(line)}", markup=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def _client() -> Iterator[Client]:
    settings = resolve(state.url, state.token, state.profile)
    with Client(settings.url, settings.token) as client:
        yield client


def call(fn: Callable[[Client], T]) -> T:
    """Run one SDK call, turning every SDK error into a one-line message and an exit code."""
    try:
        with _client() as client:
            return fn(client)
    except ApiError as e:
        fail(e.message(), 1)
    except ConfigError as e:
        fail(str(e), 2)
    except Error as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e), 2)


def emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "—"


def load_file(path: str) -> dict[str, Any]:
    """A JSON or YAML object from a file, or from stdin with `-`."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        first = f"{getattr(e, 'problem', None) or e}" + (f" at line {mark.line + 1}" if mark else "")
        fail(f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML or JSON'}: {first}", 2)
    if not isinstance(data, dict):
        fail(f"{path} must hold an object (the task's fields)", 2)
    return data


def parse_json_option(text: str | None, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        fail(f"{name} is not valid JSON: {e}", 2)
    if not isinstance(value, dict):
        fail(f"{name} must be a JSON object", 2)
    return value


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value`: the value is read as JSON when it parses (2, true, {"a": 1}), else a string."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--set wants key=value, got {pair!r}", 2)
        try:
            fields[key] = json.loads(value)
        except ValueError:
            fields[key] = value
    return fields


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> int:
    """Seconds from `3600`, `90s`, `15m`, `2h`, `1d`, `1h30m`."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        fail(f"{text!r} is not a duration (examples: 3600, 15m, 2h, 1d, 1h30m)", 2)
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def short_ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%SZ") if value else "—"


def task_table(tasks: list[models.Task]) -> Table:
    # Fits 80 columns: each task is a title line, its id and its schedule under it.
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, leading=1)
    table.add_column("task", overflow="fold", ratio=1)
    table.add_column("status", no_wrap=True)
    table.add_column("next run (UTC)", no_wrap=True)
    table.add_column("runs", no_wrap=True, justify="right")
    for t in tasks:
        sched = t.schedule_kind + (f" {t.schedule_expr}" if t.schedule_expr else "")
        cell = f"[bold]{escape(t.title)}[/bold]\n{t.id}\n[dim]{escape(sched)} · {t.timezone}[/dim]"
        runs = f"{t.run_count}" + (f" ({t.failure_count} failed)" if t.failure_count else "")
        table.add_row(cell, t.status, short_ts(t.next_run_at), runs)
    return table


def show_task(task: models.Task, as_json: bool) -> None:
    if as_json:
        emit_json(task)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in task.model_dump(mode="json").items():
        if key == "payload":
            value = json.dumps(value, ensure_ascii=False)
        table.add_row(key, "—" if value is None else str(value))
    out.print(table)


def runs_table(runs: list[models.Run], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("took", no_wrap=True, justify="right")
    table.add_column("error", overflow="fold", ratio=1)
    for r in runs:
        error = ""
        if r.error:
            error = f"{r.error.get('type', '')}: {r.error.get('message', '')}".strip(": ")
        elif r.skip_reason:
            error = f"skipped: {r.skip_reason}"
        status = r.status + (f" {r.attempt}/{r.max_attempts}" if r.attempt > 1 or r.status == "retrying" else "")
        took = f"{r.duration_ms} ms" if r.duration_ms is not None else "—"
        table.add_row(r.id, r.trigger, status, short_ts(r.started_at or r.scheduled_for), took, escape(error))
    return table


# ---- tasks ---------------------------------------------------------------------------------


@app.command("ls")
def ls(
    status: Annotated[str | None, typer.Option(help="active, paused, canceled or completed.")] = None,
    kind: Annotated[str | None, typer.Option(help="cron, rrule, once or event.")] = None,
    created_by: Annotated[str | None, typer.Option(help="Agent id (the admin's filter).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many tasks (newest first).", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    tasks = call(
        lambda c: list(
            c.tasks.list(
                status=status,
                schedule_kind=kind,
                created_by=created_by,
                page_size=min(limit, 200),
                max_items=limit,
            )
        )
    )
    if as_json:
        emit_json(tasks)
    else:
        out.print(task_table(tasks))


@app.command()
def get(task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Show one task."""
    show_task(call(lambda c: c.tasks.get(task_id)), as_json)


@app.command()
def create(
    file: Annotated[str, typer.Option("--file", "-f", help="The task as JSON or YAML (`-` reads stdin).")],
    idempotency_key: Annotated[str | None, typer.Option(help="Replays return the first task (24 h).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a task from a file. `created_by` defaults to the token's agent."""
    fields = load_file(file)
    show_task(call(lambda c: c.tasks.create(idempotency_key=idempotency_key, **fields)), as_json)


@app.command()
def update(
    task_id: TaskId,
    file: Annotated[str | None, typer.Option("--file", "-f", help="Fields to change, JSON or YAML.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value (value read as JSON if it parses); repeatable.")
    ] = None,
    if_match: Annotated[str | None, typer.Option(help="The version you read: refuse if it changed since.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change some fields of a task (partial update)."""
    fields = {**(load_file(file) if file else {}), **parse_sets(set_ or [])}
    if not fields:
        fail("nothing to change: give --file and/or --set key=value", 2)
    show_task(call(lambda c: c.tasks.update(task_id, if_match=if_match, **fields)), as_json)


def _status_line(task: models.Task) -> str:
    extra = f", next run {ts(task.next_run_at)}" if task.status == "active" else ""
    if task.snoozed_until:
        extra += f", snoozed until {ts(task.snoozed_until)}"
    return f"{task.id}: {task.status}{extra}"


@app.command()
def pause(task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Pause: no scheduled or event run starts until resumed."""
    task = call(lambda c: c.tasks.pause(task_id))
    emit_json(task) if as_json else out.print(_status_line(task), highlight=False)


@app.command()
def resume(task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Resume: the next fire is computed from now (missed fires are not run)."""
    task = call(lambda c: c.tasks.resume(task_id))
    emit_json(task) if as_json else out.print(_status_line(task), highlight=False)


@app.command()
def cancel(task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Cancel forever (idempotent)."""
    task = call(lambda c: c.tasks.cancel(task_id))
    emit_json(task) if as_json else out.print(_status_line(task), highlight=False)


@app.command()
def snooze(
    task_id: TaskId,
    delay: Annotated[str, typer.Argument(help="How much later: seconds, or 15m, 2h, 1d, 1h30m (≤ 7 days).")],
    reason: Annotated[str | None, typer.Option(help="Why (shown on the task).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the next scheduled execution later; the cadence after it is unchanged."""
    seconds = parse_duration(delay)
    task = call(lambda c: c.tasks.snooze(task_id, seconds, reason))
    emit_json(task) if as_json else out.print(_status_line(task), highlight=False)


@app.command("run")
def run_task(
    task_id: TaskId,
    input: Annotated[
        str | None, typer.Option(help='JSON object the pipeline sees as `input`, e.g. \'{"why": "x"}\'.')
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the task once now, outside its schedule."""
    data = parse_json_option(input, "--input")
    run = call(lambda c: c.tasks.run_now(task_id, data))
    emit_json(run) if as_json else out.print(f"run {run.id} {run.status} (task {run.task_id})", highlight=False)


@app.command()
def runs(
    task_id: TaskId,
    limit: Annotated[int, typer.Option(help="At most this many runs (newest first).", min=1)] = 20,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table live until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.2)] = 2.0,
    count: Annotated[
        int | None, typer.Option(help="With --watch: stop after this many refreshes (default: until Ctrl-C).", min=1)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """A task's runs, newest first; `--watch` refreshes them live."""

    def fetch(c: Client) -> list[models.Run]:
        return list(c.runs.list(task_id, page_size=min(limit, 200), max_items=limit))

    if not watch:
        items = call(fetch)
        emit_json(items) if as_json else out.print(runs_table(items))
        return
    if as_json:  # one JSON array per refresh, one per line: easy to pipe
        for items in _watch(fetch, interval, count):
            sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in items]) + "\n")
            sys.stdout.flush()
        return
    with Live(Table(), console=out, auto_refresh=False) as live:
        for items in _watch(fetch, interval, count):
            title = f"runs of {task_id} — {datetime.now(UTC):%H:%M:%SZ} (Ctrl-C stops)"
            live.update(runs_table(items, title), refresh=True)
    if not out.is_terminal:
        out.line()  # a pipe gets the last table without its final newline otherwise


def _watch(fetch: Callable[[Client], T], interval: float, count: int | None) -> Iterator[T]:
    done = 0
    try:
        with _client() as client:
            while count is None or done < count:
                try:
                    yield fetch(client)
                except ApiError as e:
                    fail(e.message(), 1)
                except Error as e:
                    fail(str(e), 1)
                done += 1
                if count is None or done < count:
                    time.sleep(interval)
    except ConfigError as e:
        fail(str(e), 2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("run-detail")
def run_detail(
    task_id: TaskId,
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    as_json: JsonOpt = False,
) -> None:
    """One run: its outcome, and each step's status and output."""
    run = call(lambda c: c.runs.get(task_id, run_id))
    if as_json:
        emit_json(run)
        return
    out.print(runs_table([run]))
    steps = Table(title="steps", header_style="bold")
    for col in ("step", "type", "status", "duration", "output / error"):
        steps.add_column(col, overflow="fold")
    for s in run.steps:
        detail = s.error if s.error else s.output
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
        if s.output_truncated:
            text += " (truncated)"
        dur = f"{s.duration_ms} ms" if s.duration_ms is not None else "—"
        steps.add_row(s.id, s.type, s.status, dur, text[:2000])
    out.print(steps)


# ---- schedules -----------------------------------------------------------------------------


@app.command()
def preview(
    expr: Annotated[str | None, typer.Argument(help="The schedule expression (quote it).")] = None,
    kind: Annotated[str, typer.Option("--kind", help="cron, rrule or once.")] = "cron",
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone the expression is read in.")] = "UTC",
    after: Annotated[str | None, typer.Option(help="Fires strictly after this RFC 3339 instant (default now).")] = None,
    count: Annotated[int, typer.Option(help="How many fires (1–100).")] = 10,
    task: Annotated[str | None, typer.Option("--task", help="Preview an existing task's schedule instead.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The next fires of an expression, in local time and UTC; fires a DST change moves are marked."""
    if (expr is None) == (task is None):
        fail("give an expression, or --task ID (not both)", 2)
    if task is not None:

        def fetch(c: Client) -> tuple[models.SchedulePreview, str, str, str | None]:
            t = c.tasks.get(task)
            return c.tasks.preview(task, count, after), t.timezone, t.schedule_kind, t.schedule_expr

        result, tz, kind, expr = call(fetch)
    else:
        result = call(lambda c: c.schedules.preview(kind, expr, timezone=tz, count=count, after=after))
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")  # the server accepted it; this machine's tz database does not know it
    want = dst.wanted(kind, expr)
    rows = [(t, t.astimezone(zone), dst.note(t, zone, want)) for t in result.next_runs]
    if as_json:
        emit_json(
            {
                "description": result.description,
                "timezone": tz,
                "next_runs": [
                    {"utc": f"{t.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}", "local": loc.isoformat(), "dst": n or None}
                    for t, loc, n in rows
                ],
            }
        )
        return
    table = Table(title=f"{result.description}", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column(f"local ({tz})")
    table.add_column("UTC")
    table.add_column("DST")
    for i, (t, loc, n) in enumerate(rows, 1):
        table.add_row(str(i), f"{loc:%a %Y-%m-%d %H:%M:%S %Z}", ts(t), f"[yellow]{n}[/yellow]" if n else "")
    out.print(table)


# ---- events and agents ---------------------------------------------------------------------


@events_app.command("send")
def events_send(
    name: Annotated[str, typer.Argument(help="Event name, e.g. order.created.")],
    data: Annotated[str | None, typer.Option(help="JSON object, visible to templates as event.data.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish an event: starts the caller's matching event tasks."""
    payload = parse_json_option(data, "--data")
    accepted = call(lambda c: c.events.send(name, payload))
    if as_json:
        emit_json(accepted)
        return
    out.print(f"event {accepted.event_id}: {len(accepted.runs)} run(s) started", highlight=False)
    for r in accepted.runs:
        out.print(f"  task {r.get('task_id')} run {r.get('run_id')}", highlight=False)


@agents_app.command("ls")
def agents_ls(as_json: JsonOpt = False) -> None:
    """List agents."""
    agents = call(lambda c: c.agents.list())
    if as_json:
        emit_json(agents)
        return
    table = Table(header_style="bold")
    for col in ("agent id", "name", "status", "created"):
        table.add_column(col)
    for a in agents:
        table.add_row(a.agent_id, a.name, a.status, ts(a.created_at))
    out.print(table)


@agents_app.command("create")
def agents_create(name: Annotated[str, typer.Argument(help="The agent's name.")], as_json: JsonOpt = False) -> None:
    """Create an agent. Its token and signing secret are shown only now: store them."""
    agent = call(lambda c: c.agents.create(name))
    if as_json:
        emit_json(agent)
        return
    out.print(f"agent_id:       {agent.agent_id}\nname:           {agent.name}", highlight=False)
    out.print(f"token:          {agent.token}\nsigning_secret: {agent.signing_secret}", highlight=False)
    err.print("(the token and the signing secret are shown only once)")


@agents_app.command("revoke")
def agents_revoke(agent_id: Annotated[str, typer.Argument(help="The agent id.")], as_json: JsonOpt = False) -> None:
    """Revoke an agent's token (effective on its next request)."""
    agent = call(lambda c: c.agents.revoke(agent_id))
    emit_json(agent) if as_json else out.print(f"{agent.agent_id}: {agent.status}", highlight=False)


@agents_app.command("egress")
def agents_egress(
    agent_id: Annotated[str, typer.Argument(help="The agent id.")],
    aws_target: Annotated[
        list[str] | None, typer.Option("--aws-target", help="An AWS target the agent may call (repeat; * globs).")
    ] = None,
    http_allow: Annotated[
        list[str] | None, typer.Option("--http-allow", help="host[:port] or CIDR[:port] it may reach (repeat).")
    ] = None,
    set_: Annotated[
        bool, typer.Option("--set", help="Replace both lists with the options given (none: empty).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what an agent's steps may reach, or (with --set) replace it."""
    if (aws_target or http_allow) and not set_:
        raise typer.BadParameter("add --set to replace the agent's lists")
    if set_:
        got = call(lambda c: c.agents.set_egress(agent_id, aws_targets=aws_target or (), http_allow=http_allow or ()))
    else:
        got = call(lambda c: c.agents.egress(agent_id))
    if as_json:
        emit_json(got)
        return
    out.print(f"aws_targets: {', '.join(got.aws_targets) or '(none)'}", highlight=False)
    out.print(f"http_allow:  {', '.join(got.http_allow) or '(none)'}", highlight=False)


BudgetOpt = Annotated[
    int | None, typer.Option(min=0, help="With --set: the agent's own value (left out: the default).")
]


@agents_app.command("budget")
def agents_budget(
    agent_id: Annotated[str, typer.Argument(help="The agent id.")],
    runs_per_minute: BudgetOpt = None,
    runs_burst: BudgetOpt = None,
    runs_in_flight: BudgetOpt = None,
    min_interval_seconds: BudgetOpt = None,
    set_: Annotated[
        bool, typer.Option("--set", help="Replace the agent's budget with the options given (none: the defaults).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show an agent's run budget, or (with --set) replace it."""
    given = {
        "runs_per_minute": runs_per_minute,
        "runs_burst": runs_burst,
        "runs_in_flight": runs_in_flight,
        "min_interval_seconds": min_interval_seconds,
    }
    if any(v is not None for v in given.values()) and not set_:
        raise typer.BadParameter("add --set to replace the agent's budget")
    got = call(lambda c: c.agents.set_budget(agent_id, **given) if set_ else c.agents.budget(agent_id))
    if as_json:
        emit_json(got)
        return
    for name in given:
        own = getattr(got.agent, name)
        note = "the agent's own" if own is not None else "the default"
        out.print(f"{name}: {getattr(got.effective, name)} ({note})", highlight=False)


def main() -> None:
    # Usage errors (a missing argument, an unknown option) are typer's own: exit code 2 and a
    # short framed message naming the problem, no traceback.
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
