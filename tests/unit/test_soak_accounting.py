"""The soak's own accounting (bench/soak.py) and its fault hooks (local/faults.py), without a stack:
a lost fire, a double execution, a stuck run and a chain event are each seen for what they are;
the DynamoDB hooks fail or replay real SDK requests; the crash hook interrupts a real pipeline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bench.soak import AttemptLog, Call, Plan, account, attempts_from_log, recount
from chalicelib.execution.pipeline import RunContext, run_pipeline
from local.faults import EXEMPT_AGENT, Faults, WorkerCrash, _Injector

T0 = 1_800_000_000.0  # a minute boundary


def _run(rid: str, tid: str, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "task_id": tid,
        "trigger": "schedule",
        "status": status,
        "scheduled_for": "2027-01-15T08:00:00Z",
        "steps": [],
        **fields,
    }


def _iso(t: float) -> str:
    from bench.soak import iso

    return iso(t)


def _call(
    key: str, arrived: float, outcome: str = "ok", delivered: bool = True, task: str = "cron", attempt: int = 1
) -> Call:
    return Call(key, task, str(attempt), arrived, outcome, arrived + 0.1, delivered)


def _cron_plan() -> Plan:
    plan = Plan()
    plan.crons["cron"] = {"agent": "a", "expected": [T0]}
    return plan


def _doubles(acc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(d.kind, d.run_id, d.call.attempt) for d in acc["doubles"]]


def _redeliveries(acc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r.cause, r.run_id, r.call.attempt) for r in acc["redeliveries"]]


def test_each_failure_figure_counts_what_it_names() -> None:
    plan = Plan()
    plan.crons["cron"] = {"agent": "a", "expected": [T0, T0 + 60, T0 + 120]}
    plan.onces["once"] = {"agent": "a", "at": T0 + 30}
    runs = {
        "cron": [
            _run("r1", "cron", scheduled_for=_iso(T0)),
            _run("r2", "cron", "running", scheduled_for=_iso(T0 + 60)),
            # T0 + 120 has no record: lost. This one answers no expected fire.
            _run("r9", "cron", scheduled_for=_iso(T0 + 7)),
        ],
        "once": [_run("r3", "once", scheduled_for=_iso(T0 + 30))],
    }
    calls = [
        _call("r1", T0 + 0.5),
        _call("r2", T0 + 61, "error", delivered=False),
        _call("r3", T0 + 31),
        _call("r3", T0 + 95),  # a second successful execution of the once fire
        _call("r7", T0 + 5),  # a run id no record has
    ]
    acc = account(plan, runs, calls)
    assert [(k, t, w) for k, t, w in acc["lost"]] == [("cron", "cron", T0 + 120)]
    assert _doubles(acc) == [("unexplained", "r3", "1")]  # a second success, nothing explains it
    assert [r["id"] for r in acc["stuck"]] == ["r2"]
    assert [r["id"] for r in acc["unexpected"]] == ["r9"]
    assert acc["unknown_keys"] == ["r7"]
    assert len(acc["expected"]) == 4 and len(acc["records"]) == 4
    assert acc["executions"] == {1: 2, 2: 1, 0: 1}
    assert sorted(round(x, 2) for x in acc["lags"]) == [0.5, 1.0, 1.0]


def test_chain_events_are_expected_from_final_emitter_records_only() -> None:
    plan = Plan()
    plan.chain = {"head": {"agent": "a", "role": "head"}, "mid": {"agent": "a", "role": "mid"}}
    plan.chain["tail"] = {"agent": "a", "role": "tail"}
    emitted = [{"id": "emit", "status": "succeeded", "output": {"event_id": "ev1"}}]
    runs = {
        "head": [
            _run("h1", "head", steps=emitted),
            _run(
                "h2", "head", "retrying", steps=[{"id": "emit", "status": "succeeded", "output": {"event_id": "ev2"}}]
            ),
        ],
        "mid": [
            _run("m1", "mid", trigger="event", event={"id": "ev1", "data": {"from": "h1"}}),
            # A second event from the same emit: a second run for one fire.
            _run("m2", "mid", trigger="event", event={"id": "ev9", "data": {"from": "h1"}}),
        ],
        "tail": [],
    }
    calls = [_call("m1", T0 + 1, task="mid"), _call("m2", T0 + 2, task="mid")]
    acc = account(plan, runs, calls)
    # The fire of a listener is its emitter's run (final records only: h2 is still retrying).
    assert [w for k, _, w in acc["expected"] if k == "event"] == ["h1"]
    assert acc["duplicate_records"] == [("event", "mid", "h1")] and not acc["lost"]
    assert [r["id"] for r in acc["stuck"]] == ["h2"]
    assert _doubles(acc) == [("two_runs", "m2", "1")]


def test_one_fire_executed_under_two_run_ids_is_a_double_even_with_a_crash_logged() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0)), _run("r2", "cron", scheduled_for=_iso(T0))]}
    calls = [_call("r1", T0 + 1), _call("r2", T0 + 2), _call("r2", T0 + 3, "error", delivered=False)]
    # A crash of r1 explains a redelivery of r1, never a second run for the same fire.
    log = AttemptLog(crashed={("r1", 1): T0 + 1.5})
    acc = account(plan, runs, calls, log)
    assert _doubles(acc) == [("two_runs", "r2", "1")] and not acc["redeliveries"]
    assert acc["duplicate_records"] == [("cron", "cron", T0)]


def test_a_success_under_a_run_id_with_no_record_counts_against_its_fire() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("1800000000-sabc", "cron", scheduled_for=_iso(T0))]}
    calls = [_call("1800000000-sabc", T0 + 1, task="cron"), _call("1800000000-sother", T0 + 2, task="cron")]
    acc = account(plan, runs, calls)
    assert _doubles(acc) == [("two_runs", "1800000000-sother", "1")]
    assert acc["unknown_keys"] == ["1800000000-sother"]


def test_every_success_of_a_task_the_soak_never_created_is_a_double() -> None:
    # A create answered 500 whose task was stored anyway, then retried: the second task is the
    # agent's, the first runs unknown to it.
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0))]}
    calls = [
        _call("r1", T0 + 1, task="cron"),
        _call("o1", T0 + 1, task="orphan"),
        _call("o2", T0 + 61, "error", delivered=False, task="orphan"),
        _call("o2", T0 + 70, attempt=2, task="orphan"),
    ]
    acc = account(plan, runs, calls, AttemptLog(retried={("o2", 1): "http_status@call"}))
    assert _doubles(acc) == [("unplanned_task", "o1", "1"), ("unplanned_task", "o2", "2")]
    assert not acc["redeliveries"]


def test_a_same_key_success_after_an_injected_crash_is_a_redelivery_not_a_double() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0), attempt=2, finished_at=_iso(T0 + 301))]}
    calls = [_call("r1", T0 + 1), _call("r1", T0 + 300, attempt=2)]
    crashed = AttemptLog(crashed={("r1", 1): T0 + 1.2})  # attempt 1 crashed after its call
    acc = account(plan, runs, calls, crashed)
    assert _redeliveries(acc) == [("crash", "r1", "2")] and not acc["doubles"]
    # The same calls with no crash logged, with a crash of another attempt or run, or with a
    # crash logged before the call it would explain: a double each time.
    for log in (
        AttemptLog(),
        AttemptLog(crashed={("r1", 2): T0 + 300.5}),
        AttemptLog(crashed={("r9", 1): T0 + 1.2}),
        AttemptLog(crashed={("r1", 1): T0 + 0.5}),
    ):
        acc = account(plan, runs, calls, log)
        assert _doubles(acc) == [("unexplained", "r1", "2")] and not acc["redeliveries"], log


def test_a_same_key_success_after_a_recorded_failed_attempt_is_a_redelivery() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0), attempt=2, finished_at=_iso(T0 + 12))]}
    calls = [_call("r1", T0 + 1), _call("r1", T0 + 11, attempt=2)]
    acc = account(plan, runs, calls, AttemptLog(retried={("r1", 1): "step_failed@emit"}))
    assert _redeliveries(acc) == [("retry:step_failed@emit", "r1", "2")] and not acc["doubles"]


def test_two_successes_in_one_attempt_are_a_double_whatever_befell_it() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0), attempt=1, finished_at=_iso(T0 + 5))]}
    calls = [_call("r1", T0 + 1), _call("r1", T0 + 2)]
    acc = account(plan, runs, calls, AttemptLog(crashed={("r1", 1): T0 + 3}, retried={("r1", 1): "x@call"}))
    assert _doubles(acc) == [("unexplained", "r1", "1")] and not acc["redeliveries"]


def test_a_success_after_the_run_recorded_its_own_is_a_double_even_after_a_crash() -> None:
    plan = _cron_plan()
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0), attempt=2, finished_at=_iso(T0 + 301))]}
    crashed = AttemptLog(crashed={("r1", 1): T0 + 1.2, ("r1", 2): T0 + 301.5})
    # Attempt 3 after the record says attempt 2 succeeded; then a late call of attempt 2 itself.
    calls = [_call("r1", T0 + 1), _call("r1", T0 + 300, attempt=2), _call("r1", T0 + 600, attempt=3)]
    acc = account(plan, runs, calls, crashed)
    assert _redeliveries(acc) == [("crash", "r1", "2")]
    assert _doubles(acc) == [("after_success", "r1", "3")]
    late = [_call("r1", T0 + 1), _call("r1", T0 + 300, attempt=2), _call("r1", T0 + 302.5, attempt=2)]
    assert _doubles(account(plan, runs, late, crashed)) == [("after_success", "r1", "2")]


def test_lag_without_faults_leaves_out_the_fires_whose_runs_crashed() -> None:
    plan = Plan()
    plan.crons["cron"] = {"agent": "a", "expected": [T0, T0 + 60]}
    runs = {
        "cron": [
            _run("r1", "cron", scheduled_for=_iso(T0)),
            _run("r2", "cron", scheduled_for=_iso(T0 + 60), attempt=2),
        ]
    }
    calls = [_call("r1", T0 + 0.5), _call("r2", T0 + 60 + 300, attempt=2)]
    acc = account(plan, runs, calls, AttemptLog(crashed={("r2", 1): T0 + 60.2}))  # crashed before its call
    assert sorted(round(x, 1) for x in acc["lags"]) == [0.5, 300.0]
    assert [round(x, 1) for x in acc["lags_unfaulted"]] == [0.5]
    assert not acc["doubles"] and not acc["redeliveries"]
    # A run not claimed when another run's crash failed their batch whole waits out the
    # visibility timeout too: a crash touched it.
    calls = [_call("r1", T0 + 0.5), _call("r2", T0 + 60 + 300)]
    acc = account(plan, runs, calls, AttemptLog(in_crashed_batch=frozenset({"r2", "r7"})))
    assert [round(x, 1) for x in acc["lags_unfaulted"]] == [0.5]
    assert [round(x, 1) for x in account(plan, runs, calls)["lags_unfaulted"]] == [0.5, 300.0]


def test_the_stack_log_names_the_attempts_faults_befell() -> None:
    at = "2027-01-15 08:00:01,250+0000"
    lines = {
        "fault_injected": [
            {"kind": "crash", "run_id": "r1", "attempt": 2, "at": "after_steps", "timestamp": at},
            {"kind": "crash_batch", "run_ids": ["r1", "r2"], "timestamp": at},
            {"kind": "ddb_lost_response", "operation": "PutItem", "timestamp": at},
        ],
        "run_retrying": [{"run_id": "r3", "attempt": 1, "error": {"type": "timeout", "step": "call"}}],
    }
    log = attempts_from_log(lambda message: lines.get(message, []))
    assert log.crashed == {("r1", 2): 1_800_000_001.25}
    assert log.retried == {("r3", 1): "timeout@call"}
    assert log.in_crashed_batch == {"r1", "r2"}


def test_a_dump_and_its_log_are_counted_again_offline(tmp_path: Path) -> None:
    runs = {"cron": [_run("r1", "cron", scheduled_for=_iso(T0), attempt=2, finished_at=_iso(T0 + 301))]}
    calls = [_call("r1", T0 + 1), _call("r1", T0 + 300, attempt=2)]
    dump = tmp_path / "soak.json"
    dump.write_text(
        json.dumps(
            {
                "plan": {"crons": {"cron": {"agent": "a", "expected": [T0]}}},
                "runs": runs,
                "calls": [c.__dict__ for c in calls],
            }
        )
    )
    crash = {
        "message": "fault_injected",
        "kind": "crash",
        "run_id": "r1",
        "attempt": 1,
        "timestamp": "2027-01-15 08:00:01,250+0000",
    }
    log = tmp_path / "soak.log"
    log.write_text("tasks-api - INFO - not json\n" + json.dumps(crash) + "\n")
    got = recount(dump, log)
    assert got["redeliveries"] == [("crash", "r1", "2")] and got["doubles"] == [] and got["lost"] == []
    log.write_text("")  # without the crash in the log, the same calls are a double
    assert recount(dump, log)["doubles"] == [("unexplained", "r1", "2")]


def test_overlapping_successes_under_one_concurrency_key_are_counted() -> None:
    plan = Plan()
    plan.keyed = {"t1": "a/k", "t2": "a/k"}
    calls = [
        Call("r1", "t1", "1", T0, "ok", T0 + 1.0, True),
        Call("r2", "t2", "1", T0 + 0.5, "ok", T0 + 1.5, True),  # overlaps r1
        Call("r3", "t1", "1", T0 + 2.0, "ok", T0 + 3.0, True),
        Call("r4", "t2", "1", T0 + 2.1, "stall", T0 + 7.0, False),  # not a success: not counted
    ]
    assert account(plan, {}, calls)["overlaps"] == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", Faults()), ("ddb:0.05, sqs:0.1", Faults(ddb=0.05, sqs=0.1)), ("crash:0", Faults())],
)
def test_fault_specs_parse(raw: str, expected: Faults) -> None:
    assert Faults.parse(raw) == expected


@pytest.mark.parametrize("raw", ["dynamo:0.1", "ddb", "ddb:x", "ddb:1", "sqs:-0.1"])
def test_a_malformed_fault_spec_is_an_error_not_no_fault(raw: str) -> None:
    with pytest.raises(ValueError, match="TASKAPI_FAULTS"):
        Faults.parse(raw)


class _DynamoDB(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _DynamoDB.requests.append(self.headers.get("X-Amz-Target", ""))
        body = json.dumps({"TableNames": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dynamodb_endpoint() -> Iterator[str]:
    _DynamoDB.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DynamoDB)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _client(endpoint: str, injector: _Injector, agent_extra: str | None = None) -> Any:
    client = boto3.session.Session(region_name="us-east-1").client(
        "dynamodb",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, user_agent_extra=agent_extra),
    )
    client.meta.events.register("before-send.dynamodb", injector.before_send("ddb"))
    client.meta.events.register("needs-retry.dynamodb", injector.needs_retry("ddb"))
    return client


def test_ddb_faults_fail_or_replay_real_requests_once_armed(dynamodb_endpoint: str) -> None:
    injector = _Injector(Faults(ddb=0.999), seed=1)
    client = _client(dynamodb_endpoint, injector)
    client.list_tables()
    assert len(_DynamoDB.requests) == 1 and not injector.counts  # not armed yet: untouched
    injector.armed.set()
    for _ in range(20):
        try:
            client.list_tables()
        except client.exceptions.ClientError as e:  # every attempt faulted: surfaces as AWS would
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    counts = injector.counts
    assert counts["ddb_500"] > 0 and counts["ddb_lost_response"] > 0
    # A 500 never reaches the server; a lost response did reach it (and was sent again).
    assert len(_DynamoDB.requests) == 1 + counts["ddb_attempts"] - counts["ddb_500"]


def test_the_pollers_client_is_never_faulted(dynamodb_endpoint: str) -> None:
    injector = _Injector(Faults(ddb=0.999), seed=1)
    injector.armed.set()
    client = _client(dynamodb_endpoint, injector, agent_extra=EXEMPT_AGENT)
    for _ in range(10):
        client.list_tables()
    assert len(_DynamoDB.requests) == 10 and not injector.counts


def test_crashes_fall_inside_the_steps_or_after_them_and_are_no_exception() -> None:
    injector = _Injector(Faults(crash=0.999), seed=3)
    injector.armed.set()
    ctx = RunContext({}, {}, None, None, "task", "run-1", 1, "whsec_x")
    payload = {"steps": [{"id": "note", "type": "log", "message": "x"}, {"id": "chain", "type": "emit", "name": "e"}]}
    emitted: list[str] = []

    def emit(name: str, data: Any, step_id: str) -> str:
        emitted.append(step_id)
        return "event-1"

    crashing = injector.crashing(run_pipeline)
    for _ in range(30):
        before, after_steps = len(emitted), injector.counts["crash_after_steps"]
        with pytest.raises(WorkerCrash) as info:
            crashing(payload, ctx, emit=emit)
        assert not isinstance(info.value, Exception)  # no `except Exception` of the worker catches it
        if injector.counts["crash_after_steps"] > after_steps:
            assert len(emitted) == before + 1  # every effect done, then the crash
    counts = injector.counts
    assert counts["crash"] == 30 == counts["crash_in_steps"] + counts["crash_after_steps"]
    assert counts["crash_in_steps"] > 0 and counts["crash_after_steps"] > 0
    assert len(emitted) < 30  # some crashes came before the emit step
    injector.armed.clear()
    assert crashing(payload, ctx, emit=emit).succeeded  # disarmed: untouched
