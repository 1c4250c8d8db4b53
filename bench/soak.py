"""A soak with faults injected, on the local stack (docs/soak.md).

Several agents, each with every-minute crons (some sharing a concurrency key), once tasks created
throughout, and an event chain (a cron whose `emit` starts an event task, whose own `emit` starts
another). Every task's first step POSTs to a target run here, which answers 500 or stalls past
the step's timeout for a share of calls and records each call's `Idempotency-Key` (the run id).
Meanwhile the stack injects faults (`TASKAPI_FAULTS`, `local/faults.py`): transient DynamoDB and
SQS failures and workers interrupted mid-step.

After the load, the soak waits until every run is final (a crashed invocation's message comes back
after the queue's visibility timeout, 300 s), at most `--drain-minutes`, then counts:

- fires expected (cron minutes between the tasks' bounds, once instants, events emitted by the
  chain's final run records) and the run records found for them;
- `soak_lost`: an expected fire with no run record;
- `soak_double_executions`: successful executions at the target the system did not absorb: one
  fire under two run ids, a same-key success that no crash injected after the earlier success
  nor a failed attempt the worker recorded explains, a success after the run recorded its own;
- `soak_redeliveries`: same-key successes those do explain (at least once: the target's
  `Idempotency-Key` absorbs them);
- `soak_stuck_runs`: runs not final (succeeded/failed/skipped) at the end;
- `soak_lag_p99_s`: first arrival at the target minus the scheduled instant, scheduled fires;
  `soak_lag_p99_unfaulted_s` the same for fires no crash touched;
- the local stack process's RSS at the start and the end of the load.

The figures are printed and merged into bench/results.json; the details of every lost, double or
stuck run are printed. A setup that did not work (the stack did not start, no fire, no call at the
target, faults asked for but not injected) exits non-zero: zeros are never reported as success.
Usage: python bench/soak.py [--minutes 3.5] [--drain-minutes 5.5] [--agents 3] [--quick] [--dump FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import write_results  # noqa: E402
from local.env import free_port  # noqa: E402

FINAL = ("succeeded", "failed", "skipped")
TOTAL_BUDGET_SECONDS = 10 * 60  # the whole soak, start to stop
STEP_TIMEOUT = 3  # the HTTP steps' timeout_seconds
CHAIN = ("soak.chain.1", "soak.chain.2")


class SetupBroken(SystemExit):
    def __init__(self, why: str) -> None:
        super().__init__(f"soak: setup broken, no figures written: {why}")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------- the target


@dataclass
class Call:
    key: str
    task_id: str
    attempt: str
    arrived: float
    outcome: str  # "ok" (200), "error" (500), "stall" (held past the step timeout, then closed)
    left: float = 0.0
    delivered: bool = False  # a 200 written without error: a successful execution


class Target:
    """Answers 500 for `error_share` of calls, stalls `stall_share` of them past the step timeout,
    and answers 200 otherwise (after `hold` seconds for the tasks named in `slow_tasks`)."""

    def __init__(self, error_share: float, stall_share: float, seed: int) -> None:
        self.error_share, self.stall_share = error_share, stall_share
        self.calls: list[Call] = []
        self.slow_tasks: set[str] = set()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                target.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, name="soak-target", daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        with self._lock:
            x = self._random.random()
        outcome = "error" if x < self.error_share else "stall" if x < self.error_share + self.stall_share else "ok"
        call = Call(
            key=h.headers.get("Idempotency-Key") or "",
            task_id=h.headers.get("X-Task-Id") or "",
            attempt=h.headers.get("X-Attempt") or "",
            arrived=time.time(),
            outcome=outcome,
        )
        with self._lock:
            self.calls.append(call)
        try:
            if outcome == "stall":
                time.sleep(STEP_TIMEOUT + 2)
                h.close_connection = True
                return
            if outcome == "ok" and call.task_id in self.slow_tasks:
                time.sleep(1.0)  # long enough for a second run of the same concurrency key to overlap
            status, body = (500, b'{"error":"injected"}') if outcome == "error" else (200, b'{"ok":true}')
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
            call.delivered = outcome == "ok"
        except OSError:
            pass  # the worker gave up (timeout, crash): not a successful execution
        finally:
            call.left = time.time()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- the stack


class Stack:
    """`python -m local` on free ports with faults on; its JSON log lines are kept."""

    def __init__(self, faults: str, log_path: Path | None) -> None:
        self.port, self.moto_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = {"Authorization": "Bearer soak-admin-" + os.urandom(12).hex()}
        self.lines: list[str] = []
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TASKAPI_", "POWERTOOLS_"))}
        env.update(
            PORT=str(self.port),
            MOTO_PORT=str(self.moto_port),
            TASKAPI_ADMIN_TOKEN=self.admin["Authorization"].split()[1],
            TASKAPI_TICK_SECONDS="2",
            TASKAPI_PREFIX="tasksapi-soak-",
            TASKAPI_STATE="memory",  # never the developer's .data/
            TASKAPI_EGRESS_ALLOW="127.0.0.1",  # the target listens on loopback
            TASKAPI_FAULTS=faults,
            POWERTOOLS_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, name="soak-stack-output", daemon=True).start()
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                time.sleep(0.5)
                raise SetupBroken(
                    f"python -m local exited with {self.proc.returncode}:\n" + "\n".join(self.lines[-30:])
                )
            try:
                if requests.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise SetupBroken("python -m local was not ready within 90 s:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.3)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, message: str) -> list[dict[str, Any]]:
        return log_events(list(self.lines), message)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        time.sleep(0.5)  # the reader's last lines
        if self.log_path is not None:
            self.log_path.write_text("\n".join(self.lines) + "\n")
        return self.proc.returncode


def log_events(lines: list[str], message: str) -> list[dict[str, Any]]:
    """The stack's JSON log lines with this `message`."""
    out = []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("message") == message:
            out.append(ev)
    return out


class KeyInProgress(Exception):
    """A create's Idempotency-Key answers 409 "still in progress" however long we wait."""


class Api:
    """The API as an agent uses it: transient answers (5xx, connection errors) are retried, a
    create with the same Idempotency-Key; anything else is an error of the soak's setup."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.session = base, requests.Session()
        self.session.headers.update(headers)
        self.retried = 0

    def call(self, method: str, path: str, body: Any = None, expect: int = 200, key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        last = ""
        in_progress = False
        for attempt in range(10):
            try:
                r = self.session.request(method, self.base + path, json=body, headers=headers, timeout=30)
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == expect:
                    return r.json()
                last = f"{r.status_code} {r.text[:300]}"
                # A create retried with its key while the first try is still recorded in progress
                # is told to retry shortly (409); anything else under 500 is final.
                in_progress = r.status_code == 409 and "in progress" in r.text
                if r.status_code < 500 and r.status_code != 429 and not in_progress:
                    break
            self.retried += 1
            time.sleep(min(4.0, 0.25 * 2**attempt))
        if in_progress:
            raise KeyInProgress(last)
        raise SetupBroken(f"{method} {path} failed: {last}")


# ---------------------------------------------------------------------------- the load


@dataclass
class Plan:
    agents: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, Api] = field(default_factory=dict)  # agent id -> its API
    crons: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> {agent, expected: [epoch]}
    onces: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> {agent, at}
    chain: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> {agent, role: head|mid|tail}
    keyed: dict[str, str] = field(default_factory=dict)  # task id -> its concurrency key (limit 1)

    def all_tasks(self) -> dict[str, str]:
        out = {t: v["agent"] for t, v in self.crons.items()}
        out.update({t: v["agent"] for t, v in self.onces.items()})
        out.update({t: v["agent"] for t, v in self.chain.items()})
        return out


def http_step(target: Target) -> dict[str, Any]:
    return {
        "id": "call",
        "type": "http",
        "method": "POST",
        "url": f"http://127.0.0.1:{target.port}/hook",
        "body": {"scheduled_for": "{{ run.scheduled_for }}"},
        "timeout_seconds": STEP_TIMEOUT,
    }


def task_body(agent_id: str, title: str, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "title": title,
        "description": "soak",
        "created_by": agent_id,
        "payload": {"steps": steps},
        **fields,
    }


ABANDONED_KEYS: list[str] = []  # creates whose Idempotency-Key stayed "in progress" (~25 s of retries)


def create(api: Api, body: dict[str, Any]) -> str:
    """A create with an Idempotency-Key; a key left "in progress" is given up for a fresh one (as an
    agent would have to), and counted: the first try may have made a task no one expects."""
    for _ in range(3):
        key = os.urandom(12).hex()
        try:
            return str(api.call("POST", "/tasks", body, expect=201, key=key)["id"])
        except KeyInProgress:
            ABANDONED_KEYS.append(key)
    raise SetupBroken("POST /tasks: three Idempotency-Keys in a row stayed in progress")


def set_up(stack: Stack, target: Target, args: argparse.Namespace) -> tuple[Plan, float]:
    """The agents and their tasks; the load phase ends `--minutes` after the agents exist."""
    admin = Api(stack.base, stack.admin)
    plan = Plan()
    agents = [admin.call("POST", "/agents", {"name": f"soak-{i}"}, expect=201) for i in range(args.agents)]
    load_end = time.time() + args.minutes * 60
    # Bounds half a minute off the minute, the first minute at least 40 s away (the tasks are
    # made by then): every minute in between fires, and no fire is in doubt.
    first = math.ceil((time.time() + 40) / 60) * 60
    starts, ends = first - 30, math.floor(load_end / 60) * 60 + 30
    if ends <= starts:  # a load shorter than that minute: crons with no fire in their bounds
        ends = starts + 20
    expected = list(range(first, ends, 60))
    cron = {"schedule_kind": "cron", "schedule_expr": "* * * * *", "starts_at": iso(starts), "ends_at": iso(ends)}
    for i, agent in enumerate(agents):
        aid = agent["agent_id"]
        api = Api(stack.base, {"Authorization": f"Bearer {agent['token']}"})
        plan.agents.append(agent)
        plan.tokens[aid] = api
        for j in range(args.crons):
            fields: dict[str, Any] = dict(cron)
            if j < args.keyed:
                fields.update(concurrency_key=f"soak-{i}", concurrency_limit=1)
            tid = create(api, task_body(aid, f"cron {i}.{j}", [http_step(target)], **fields))
            plan.crons[tid] = {"agent": aid, "expected": expected}
            if j < args.keyed:
                plan.keyed[tid] = f"{aid}/soak-{i}"
                target.slow_tasks.add(tid)
        # The emitter's run id rides in the event, so a listener's run names the fire it answers.
        emit1 = {"id": "emit", "type": "emit", "name": CHAIN[0], "data": {"from": "{{ run.id }}"}}
        emit2 = {"id": "emit", "type": "emit", "name": CHAIN[1], "data": {"from": "{{ run.id }}"}}
        tail = create(
            api, task_body(aid, f"chain tail {i}", [http_step(target)], schedule_kind="event", schedule_expr=CHAIN[1])
        )
        mid = create(
            api,
            task_body(aid, f"chain mid {i}", [http_step(target), emit2], schedule_kind="event", schedule_expr=CHAIN[0]),
        )
        head = create(api, task_body(aid, f"chain head {i}", [http_step(target), emit1], **cron))
        plan.chain[head] = {"agent": aid, "role": "head"}
        plan.chain[mid] = {"agent": aid, "role": "mid"}
        plan.chain[tail] = {"agent": aid, "role": "tail"}
        plan.crons[head] = {"agent": aid, "expected": expected}
    return plan, load_end


def add_once(plan: Plan, target: Target, rng: random.Random, load_end: float, lead: float) -> None:
    agent = rng.choice(plan.agents)
    at = int(time.time() + rng.uniform(4, lead))
    if at > load_end - 3:
        return
    tid = create(
        plan.tokens[agent["agent_id"]],
        task_body(agent["agent_id"], "once", [http_step(target)], schedule_kind="once", schedule_expr=iso(at)),
    )
    plan.onces[tid] = {"agent": agent["agent_id"], "at": at}


def list_runs(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for tid, aid in plan.all_tasks().items():
        api, runs, cursor = plan.tokens[aid], [], None
        while True:
            page = api.call("GET", f"/tasks/{tid}/runs?limit=200" + (f"&cursor={cursor}" if cursor else ""))
            runs += page["runs"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        out[tid] = runs
    return out


# ---------------------------------------------------------------------------- the accounting


@dataclass(frozen=True)
class AttemptLog:
    """What the stack's log says befell each attempt: `(run id, attempt)` -> when an injected crash
    interrupted it (`fault_injected`, kind crash), or the error the worker recorded for it before
    scheduling a retry (`run_retrying`)."""

    crashed: dict[tuple[str, int], float] = field(default_factory=dict)
    retried: dict[tuple[str, int], str] = field(default_factory=dict)
    # Runs whose message was in a batch a crash failed whole (`crash_batch`): those not claimed
    # yet come back after the visibility timeout.
    in_crashed_batch: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Double:
    """A successful execution the system did not absorb: `two_runs` (the fire's second run id),
    `unplanned_task` (by a task the soak never created: a create made twice), `unexplained` (a
    same-key success no injected fault or recorded failure explains), `after_success` (a success
    after the run had recorded its own)."""

    kind: str
    run_id: str
    call: Call


@dataclass(frozen=True)
class Redelivery:
    """A same-key success after an earlier success of the same run whose attempt went unrecorded
    for a known reason: `crash` (injected after the call) or `retry:<type>@<step>` (the worker
    recorded the attempt failed, e.g. a later step failed or the response timed out)."""

    cause: str
    run_id: str
    call: Call


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


def _schedule_fire(key: str, task_id: str, plan: Plan) -> tuple[str, str, float] | None:
    """The scheduled fire a run id names (`<fire epoch>-s<hash>`), for calls whose run has no record."""
    head, sep, rest = key.partition("-")
    if not (sep and head.isdigit() and rest.startswith("s")):
        return None
    if task_id in plan.crons:
        return ("cron", task_id, float(head))
    if task_id in plan.onces:
        return ("once", task_id, float(head))
    return None


def account(
    plan: Plan, runs: dict[str, list[dict[str, Any]]], calls: list[Call], log: AttemptLog | None = None
) -> dict[str, Any]:
    """Every figure, and the details behind each non-zero failure figure."""
    log = log or AttemptLog()
    records = [r for rs in runs.values() for r in rs]
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_id[r["id"]].append(r)
    calls_by_key: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        calls_by_key[c.key].append(c)

    # Expected fires -> the records that answer them. A chain's fire is its emitter's run (the
    # event carries the emitter's run id), so two events of one emit are one fire answered twice.
    expected: list[tuple[str, str, float | str]] = []  # (kind, task id, instant | emitter run id)
    for tid, cron in plan.crons.items():
        expected += [("cron", tid, float(m)) for m in cron["expected"]]
    for tid, o in plan.onces.items():
        expected.append(("once", tid, float(o["at"])))
    # What the chain emitted, as its emitters' final records say (a non-final emitter is counted
    # stuck instead).
    for tid, ch in plan.chain.items():
        if ch["role"] == "tail":
            continue
        child = next(
            t
            for t, c in plan.chain.items()
            if c["agent"] == ch["agent"] and c["role"] == ("mid" if ch["role"] == "head" else "tail")
        )
        for r in runs.get(tid, []):
            if r["status"] not in FINAL:
                continue
            for s in r.get("steps") or []:
                if s["id"] == "emit" and s["status"] == "succeeded" and isinstance(s.get("output"), dict):
                    expected.append(("event", child, str(r["id"])))

    matched: dict[tuple[str, str, float | str], list[dict[str, Any]]] = {}
    claimed: set[int] = set()
    for kind, tid, what in expected:
        if kind == "event":
            found = [r for r in runs.get(tid, []) if ((r.get("event") or {}).get("data") or {}).get("from") == what]
        else:
            found = [r for r in runs.get(tid, []) if r["trigger"] == "schedule" and epoch(r["scheduled_for"]) == what]
        matched[(kind, tid, what)] = found
        claimed.update(id(r) for r in found)
    lost = [k for k, v in matched.items() if not v]
    duplicate_records = [k for k, v in matched.items() if len(v) > 1]
    unexpected = [r for r in records if id(r) not in claimed]

    stuck = [r for r in records if r["status"] not in FINAL]
    statuses = Counter(r["status"] for r in records)
    # Executions at the target, per run (the Idempotency-Key is the run id).
    executions = Counter(len(calls_by_key.get(r["id"], [])) for r in records)
    unknown_keys = sorted(k for k in calls_by_key if k not in by_id)

    doubles: list[Double] = []
    redeliveries: list[Redelivery] = []
    # 1. One fire, successful executions under two or more run ids: no Idempotency-Key absorbs that.
    keys_of_fire = {fire: {r["id"] for r in found} for fire, found in matched.items()}
    for key in unknown_keys:
        fire = _schedule_fire(key, calls_by_key[key][0].task_id, plan)
        if fire in keys_of_fire:
            keys_of_fire[fire].add(key)
    for fire_keys in keys_of_fire.values():
        delivered = []
        for k in fire_keys:
            ok = [c for c in calls_by_key.get(k, []) if c.delivered]
            if ok:
                delivered.append(min(ok, key=lambda c: c.arrived))
        delivered.sort(key=lambda c: c.arrived)
        doubles += [Double("two_runs", c.key, c) for c in delivered[1:]]
    # 1b. A task the soak never created executed successfully: a create it made once became two
    # tasks (the agent knows one), so each of the other's fires is a second run of a fire.
    planned = plan.all_tasks()
    doubles += [Double("unplanned_task", c.key, c) for c in calls if c.delivered and c.task_id not in planned]
    # 2. One run, successful executions after its first: each explained by what befell the attempt
    # of the success before it (an injected crash after that call, a retry the worker recorded),
    # or a double. Any success after the run recorded its own success is a double.
    for key, group in calls_by_key.items():
        if group[0].task_id not in planned:
            continue  # every success of it is a double already (1b)
        record = by_id[key][0] if by_id.get(key) else None
        succeeded_at: tuple[int, float] | None = None
        if record is not None and record["status"] == "succeeded" and record.get("finished_at"):
            succeeded_at = (_int(record.get("attempt")), epoch(record["finished_at"]) + 1.0)  # whole seconds
        ok = sorted((c for c in group if c.delivered), key=lambda c: (_int(c.attempt), c.arrived))
        for i, c in enumerate(ok):
            if succeeded_at is not None and (_int(c.attempt) > succeeded_at[0] or c.arrived >= succeeded_at[1]):
                doubles.append(Double("after_success", key, c))
                continue
            if i == 0:
                continue
            prev = ok[i - 1]
            attempt = (key, _int(prev.attempt))
            crash = log.crashed.get(attempt)
            if _int(c.attempt) <= _int(prev.attempt):
                doubles.append(Double("unexplained", key, c))  # two successes in one attempt
            elif crash is not None and crash >= prev.arrived - 0.005:
                redeliveries.append(Redelivery("crash", key, c))
            elif attempt in log.retried:
                redeliveries.append(Redelivery("retry:" + log.retried[attempt], key, c))
            else:
                doubles.append(Double("unexplained", key, c))

    # Start lag of scheduled fires: all, and those none of whose runs a crash touched (its own
    # attempt's, or one failing the invocation its message was in).
    crashed_runs = {rid for rid, _ in log.crashed} | log.in_crashed_batch
    lags: list[float] = []
    lags_unfaulted: list[float] = []
    for (kind, _, what), found in matched.items():
        if kind == "event" or not found:
            continue
        arrivals = [c.arrived for r in found for c in calls_by_key.get(r["id"], [])]
        if arrivals:
            lag = min(arrivals) - float(what)
            lags.append(lag)
            if not any(r["id"] in crashed_runs for r in found):
                lags_unfaulted.append(lag)

    # Concurrency key (limit 1): two runs' successful calls overlapping at the target.
    overlaps = 0
    by_key: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        if c.delivered and c.task_id in plan.keyed:
            by_key[plan.keyed[c.task_id]].append(c)
    for group in by_key.values():
        group.sort(key=lambda c: c.arrived)
        for a, b in zip(group, group[1:], strict=False):
            if b.arrived < a.left - 0.05 and a.key != b.key:
                overlaps += 1

    return {
        "expected": expected,
        "matched": matched,
        "lost": lost,
        "duplicate_records": duplicate_records,
        "unexpected": unexpected,
        "stuck": stuck,
        "doubles": doubles,
        "redeliveries": redeliveries,
        "records": records,
        "statuses": statuses,
        "executions": executions,
        "unknown_keys": unknown_keys,
        "lags": lags,
        "lags_unfaulted": lags_unfaulted,
        "overlaps": overlaps,
        "calls_by_key": calls_by_key,
    }


def attempts_from_log(stack_events: Any) -> AttemptLog:
    """The crashes and recorded retries in the stack's log (`Stack.events`)."""
    crashed = {
        (str(e.get("run_id")), _int(e.get("attempt"))): log_time(e)
        for e in stack_events("fault_injected")
        if e.get("kind") == "crash"
    }
    retried = {}
    for e in stack_events("run_retrying"):
        err = e.get("error") or {}
        retried[(str(e.get("run_id")), _int(e.get("attempt")))] = f"{err.get('type')}@{err.get('step')}"
    batches = frozenset(
        str(r) for e in stack_events("fault_injected") if e.get("kind") == "crash_batch" for r in e.get("run_ids") or []
    )
    return AttemptLog(crashed, retried, batches)


def log_time(ev: dict[str, Any]) -> float:
    return datetime.strptime(str(ev.get("timestamp")), "%Y-%m-%d %H:%M:%S,%f%z").timestamp()


def lost_near(r: dict[str, Any], lost: list[dict[str, Any]]) -> str:
    """Lost responses of writes to the runs table around the run's latest start (its claim)."""
    if not r.get("started_at"):
        return ""
    t = epoch(r["started_at"])  # whole seconds
    near = [
        f"{e.get('operation')} {e.get('resource')} at {e.get('timestamp')}"
        for e in lost
        if str(e.get("resource") or "").endswith("runs")
        and e.get("operation") in ("PutItem", "UpdateItem")
        and t - 1 <= log_time(e) <= t + 3
    ]
    return f"; lost responses near its start: {', '.join(near)}" if near else ""


def describe_run(
    r: dict[str, Any], calls: list[Call], crashes: dict[str, list[dict[str, Any]]], lost: list[dict[str, Any]]
) -> str:
    seen = ", ".join(f"#{c.attempt}:{c.outcome}{'+delivered' if c.delivered else ''}" for c in calls) or "none"
    crash = (
        "; ".join(
            f"crash at {e.get('at')} of attempt {e.get('attempt')} ({e.get('timestamp')})"
            for e in crashes.get(r["id"], [])
        )
        or "no crash injected"
    )
    err = r.get("error") or {}
    return (
        f"run {r['id']} task {r['task_id']} trigger {r['trigger']} status {r['status']} attempt {r.get('attempt')}/"
        f"{r.get('max_attempts')} scheduled {r.get('scheduled_for')} started {r.get('started_at')} finished "
        f"{r.get('finished_at')} error {err.get('type')}@{err.get('step')}; target calls: {seen}; {crash}"
        + lost_near(r, lost)
    )


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(args.seed)
    target = Target(args.error_share, args.stall_share, args.seed)
    stack = Stack(args.faults, Path(args.log) if args.log else None)
    try:
        plan, load_end = set_up(stack, target, args)
        # A slow set-up (a loaded machine, faults on) must not eat the whole load window: once
        # tasks keep coming for 20 s at least, so the soak always expects fires of its own.
        load_end = max(load_end, time.time() + 20)
        rss_start = rss_kb(stack.proc.pid)
        print(f"soak: stack up and tasks made in {time.monotonic() - started:.0f} s", flush=True)
        print(
            f"soak: {len(plan.agents)} agents, {len(plan.crons)} crons, chains of 3 per agent; load until {iso(load_end)}",
            flush=True,
        )
        while time.time() < load_end - 8:
            add_once(plan, target, rng, load_end, args.once_lead)
            time.sleep(args.once_every)
        time.sleep(max(0.0, load_end - time.time()) + 2)
        # Drain: until every expected fire has a final record and nothing is in flight.
        budget_end = min(started + TOTAL_BUDGET_SECONDS - 45, time.monotonic() + args.drain_minutes * 60)
        while True:
            runs = list_runs(plan)
            acc = account(plan, runs, list(target.calls))
            pending = len(acc["stuck"]) + len(acc["lost"])
            left = budget_end - time.monotonic()
            print(
                f"soak: drain: {len(acc['records'])} records, {len(acc['stuck'])} not final, {len(acc['lost'])} fires without a record, {left:.0f} s left",
                flush=True,
            )
            if pending == 0 or left <= 0:
                break
            time.sleep(min(15.0, max(1.0, left)))
        rss_end = rss_kb(stack.proc.pid)
    finally:
        rc = stack.stop()
        target.stop()

    crashes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    lost_responses: list[dict[str, Any]] = []
    for e in stack.events("fault_injected"):
        if e.get("kind") == "crash":
            crashes[str(e.get("run_id"))].append(e)
        else:
            lost_responses.append(e)
    reported = stack.events("faults_injected")
    counts: dict[str, int] = dict(reported[-1].get("counts") or {}) if reported else {}
    calls = list(target.calls)
    # The last count, with every call the target saw and what the stack's log says of each attempt.
    acc = account(plan, runs, calls, attempts_from_log(stack.events))

    # A setup that did not work is an error, never a row of zeros.
    if not acc["expected"]:
        raise SetupBroken("no fire was expected (is the load window shorter than a minute and no once task made?)")
    if not acc["records"]:
        raise SetupBroken("no run record at all")
    if not calls:
        raise SetupBroken("the target saw no call")
    if not reported:
        raise SetupBroken(f"the stack did not report its faults (exit code {rc})")
    # Faults asked for: the hooks must have seen the calls, and drawn some when ten were due.
    shares = {k: float(v) for k, v in (p.split(":") for p in args.faults.split(",") if p)}
    for kind, seen, injected in (
        ("ddb", counts.get("ddb_attempts", 0), counts.get("ddb_500", 0) + counts.get("ddb_lost_response", 0)),
        ("sqs", counts.get("sqs_attempts", 0), counts.get("sqs_500", 0) + counts.get("sqs_lost_response", 0)),
        ("crash", counts.get("pipeline_attempts", 0), counts.get("crash", 0)),
    ):
        if shares.get(kind) and not seen:
            raise SetupBroken(f"{kind} faults were asked for and the hook saw no call (is it still wired?)")
        if shares.get(kind, 0) * seen >= 10 and not injected:
            raise SetupBroken(f"{kind} faults were asked for and none of {seen} calls got one")

    lags, unfaulted = acc["lags"], acc["lags_unfaulted"]
    figures: dict[str, Any] = {
        "soak_minutes": args.minutes,
        "soak_agents": args.agents,
        "soak_faults": args.faults,
        "soak_target_error_share": args.error_share,
        "soak_target_stall_share": args.stall_share,
        "soak_fires_expected": len(acc["expected"]),
        "soak_fires_expected_by_kind": dict(Counter(k for k, _, _ in acc["expected"])),
        "soak_run_records": len(acc["records"]),
        "soak_run_statuses": dict(sorted(acc["statuses"].items())),
        "soak_target_calls": len(calls),
        "soak_target_calls_by_outcome": dict(Counter(c.outcome for c in calls)),
        "soak_executions_per_fire": {str(k): v for k, v in sorted(acc["executions"].items())},
        "soak_lost": len(acc["lost"]),
        "soak_double_executions": len(acc["doubles"]),
        "soak_double_executions_by_kind": dict(sorted(Counter(d.kind for d in acc["doubles"]).items())),
        "soak_redeliveries": len(acc["redeliveries"]),
        "soak_redeliveries_by_cause": dict(sorted(Counter(d.cause for d in acc["redeliveries"]).items())),
        "soak_duplicate_run_records": len(acc["duplicate_records"]),
        "soak_unexpected_runs": len(acc["unexpected"]),
        "soak_target_calls_without_run_record": sum(len(acc["calls_by_key"][k]) for k in acc["unknown_keys"]),
        "soak_stuck_runs": len(acc["stuck"]),
        "soak_api_idempotency_keys_abandoned": len(ABANDONED_KEYS),
        "soak_concurrency_overlaps": acc["overlaps"],
        "soak_lag_p50_s": round(percentile(lags, 0.5) or 0.0, 2) if lags else None,
        "soak_lag_p99_s": round(percentile(lags, 0.99) or 0.0, 2) if lags else None,
        "soak_lag_max_s": round(max(lags), 2) if lags else None,
        "soak_lag_fires": len(lags),
        "soak_lag_fires_unfaulted": len(unfaulted),
        "soak_lag_p50_unfaulted_s": round(percentile(unfaulted, 0.5) or 0.0, 2) if unfaulted else None,
        "soak_lag_p99_unfaulted_s": round(percentile(unfaulted, 0.99) or 0.0, 2) if unfaulted else None,
        "soak_lag_max_unfaulted_s": round(max(unfaulted), 2) if unfaulted else None,
        "soak_faults_injected": counts,
        "soak_rss_start_mb": round(rss_start / 1024, 1) if rss_start else None,
        "soak_rss_end_mb": round(rss_end / 1024, 1) if rss_end else None,
        "soak_rss_growth_mb": round((rss_end - rss_start) / 1024, 1) if rss_start and rss_end else None,
        "soak_stack_exit_code": rc,
        "soak_seconds": round(time.monotonic() - started),
    }
    for k, v in figures.items():
        print(f"{k}: {v}")
    by_run = acc["calls_by_key"]
    for kind, tid, what in acc["lost"][:30]:
        print(f"LOST {kind} fire of task {tid}: {iso(what) if isinstance(what, float) else 'event ' + what}")
    index = {r["id"]: r for r in acc["records"]}
    for d in acc["doubles"][:30]:
        c = d.call
        print(
            f"DOUBLE ({d.kind}) call #{c.attempt} at {c.arrived:.3f} of "
            + (
                describe_run(index[d.run_id], by_run.get(d.run_id, []), crashes, lost_responses)
                if d.run_id in index
                else f"run {d.run_id} (no record) task {c.task_id}"
            )
        )
    for rd in acc["redeliveries"][:30]:
        print(f"REDELIVERY ({rd.cause}) call #{rd.call.attempt} of run {rd.run_id} task {rd.call.task_id}")
    for r in acc["stuck"][:30]:
        print("STUCK " + describe_run(r, by_run.get(r["id"], []), crashes, lost_responses))
    for r in acc["unexpected"][:10]:
        print("UNEXPECTED " + describe_run(r, by_run.get(r["id"], []), crashes, lost_responses))
    for key in acc["unknown_keys"][:10]:
        print(
            f"NO RECORD for target calls with Idempotency-Key {key}: {[(c.task_id, c.attempt, c.outcome) for c in by_run[key]]}"
        )
    if args.dump:
        Path(args.dump).write_text(
            json.dumps(
                {
                    "plan": {k: getattr(plan, k) for k in ("crons", "onces", "chain", "keyed")},
                    "runs": runs,
                    "calls": [c.__dict__ for c in calls],
                },
                default=str,
            )
        )
    figures["_accounting"] = acc  # for the quick test; not written
    return figures


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=3.5, help="load phase (the whole soak stays under 10 min)")
    ap.add_argument("--drain-minutes", type=float, default=5.5, help="at most this long waiting for runs to end")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--crons", type=int, default=4, help="every-minute crons per agent, besides the chain's head")
    ap.add_argument("--keyed", type=int, default=2, help="of those, how many share one concurrency key (limit 1)")
    ap.add_argument("--once-every", type=float, default=5.0, help="seconds between once tasks (any agent)")
    ap.add_argument("--once-lead", type=float, default=30.0, help="once tasks are due 4 s to this many seconds ahead")
    ap.add_argument("--faults", default="ddb:0.03,sqs:0.03,crash:0.05", help="TASKAPI_FAULTS of the stack")
    ap.add_argument("--error-share", type=float, default=0.10, help="share of target calls answered 500")
    ap.add_argument("--stall-share", type=float, default=0.05, help="share of target calls stalled past the timeout")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--log", help="write the stack's log lines here")
    ap.add_argument("--dump", help="write the plan, run records and target calls here (JSON), to re-count offline")
    ap.add_argument("--recount", metavar="DUMP", help="count a --dump again with its --log (no soak is run)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results.json alone")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="~1 minute once the stack is up, for a test: 30 s of load, up to 12 s of drain; not written",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.drain_minutes, args.once_every, args.once_lead, args.no_write = 0.5, 0.2, 1.0, 12.0, True
        args.crons, args.keyed, args.faults = 1, 1, "ddb:0.05,sqs:0.05,crash:0.1"
    if args.minutes * 60 + args.drain_minutes * 60 > TOTAL_BUDGET_SECONDS - 60:
        ap.error("--minutes plus --drain-minutes must leave a minute of the 10-minute budget")
    return args


def recount(dump: Path, log: Path) -> dict[str, Any]:
    """The accounting again, offline, from a `--dump` and the `--log` of the same soak."""
    data = json.loads(dump.read_text())
    lines = log.read_text().splitlines()
    acc = account(
        Plan(**data["plan"]),
        data["runs"],
        [Call(**c) for c in data["calls"]],
        attempts_from_log(lambda message: log_events(lines, message)),
    )
    lags, unfaulted = acc["lags"], acc["lags_unfaulted"]
    return {
        "lost": acc["lost"],
        "stuck": [r["id"] for r in acc["stuck"]],
        "doubles": [(d.kind, d.run_id, d.call.attempt) for d in acc["doubles"]],
        "redeliveries": [(r.cause, r.run_id, r.call.attempt) for r in acc["redeliveries"]],
        "lag_p99_s": percentile(lags, 0.99),
        "lag_p99_unfaulted_s": percentile(unfaulted, 0.99),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.recount:
        if not args.log:
            raise SystemExit("--recount needs the --log of the same soak")
        for k, v in recount(Path(args.recount), Path(args.log)).items():
            print(f"{k}: {v}")
        return 0
    figures = run(args)
    figures.pop("_accounting")
    if not args.no_write:
        write_results(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
