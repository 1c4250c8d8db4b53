"""The worker's decisions on the in-memory stores (no moto): claims, takeovers, spent attempts,
copies, skips, dedupe windows, concurrency slots and the bounded wait. SQS calls (the
visibility changes the worker makes) are answered by a botocore hook and recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.domain.records import Definition, Run, RunStatus, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.domain.runs import RunMessage
from chalicelib.execution import worker
from chalicelib.platform import wiring
from chalicelib.store import Stores, in_memory, runs, use

T0 = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
TASK, AGENT = "00000000-0000-4000-8000-0000000000c1", "agent-1"
LOG = {"steps": [{"id": "say", "type": "log", "message": "hello"}]}  # lease: 30 + 30 s
BAD_TEMPLATE = {"steps": [{"id": "say", "type": "log", "message": "{{ length(`1`) }}"}]}  # template_error


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, tz=UTC)


@pytest.fixture()
def clock() -> Iterator[Clock]:
    c = Clock()
    wiring.set_clock(c, sleep=c.advance)
    yield c
    wiring.reset()


@pytest.fixture()
def s(clock: Clock) -> Iterator[Stores]:
    chosen = in_memory()
    use(chosen)
    yield chosen
    use(None)


@pytest.fixture()
def sqs(clock: Clock) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every SQS call the worker makes, answered here (nothing leaves the process)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def answer(model: Any, params: dict[str, Any], **_: Any) -> Any:
        calls.append((model.name, json.loads(params["body"])))
        return SimpleNamespace(status_code=200), {}

    client = wiring.client("sqs")
    client.meta.events.register("before-call.sqs", answer)
    yield calls
    client.meta.events.unregister("before-call.sqs", answer)


def _task(s: Stores, *, status: TaskStatus = TaskStatus.ACTIVE, payload: Any = LOG, **definition: Any) -> Task:
    fields = {"payload": payload, "max_retries": 2, "backoff_strategy": "fixed", **definition}
    task = Task(
        task_id=TASK,
        created_by=AGENT,
        created_at="2027-03-01T11:00:00Z",
        updated_at="2027-03-01T11:00:00Z",
        status=status,
        schedule=Schedule(ScheduleKind.ONCE, "2027-03-01T12:00:00Z"),
        definition=Definition.from_fields(fields),
        schedule_version=1,
    )
    s.tasks.put(task)  # type: ignore[attr-defined]
    return task


def _fire(version: int = 1) -> RunMessage:
    return RunMessage(TASK, runs.scheduled_run_id(TASK, int(T0), version), AGENT, "schedule", int(T0), version)


def _run_now(s: Stores, clock: Clock) -> RunMessage:
    msg = RunMessage(TASK, runs.adhoc_run_id(int(clock.t), "manual"), AGENT, "run_now", int(clock.t), None)
    doc = runs.new_doc(msg, status="queued", max_attempts=3, now=clock.now)
    assert runs.put_new(msg, doc, clock.now)
    return msg


def _process(msg: RunMessage, clock: Clock, receives: int = 1) -> str:
    return worker.process(msg.to_json(), "queue", "receipt", wiring.now_precise(), receives)


def _stored(s: Stores, msg: RunMessage) -> Run:
    run = s.runs.get(msg.task_id, msg.run_id)
    assert run is not None
    return run


def _counts(s: Stores) -> tuple[int, int, str | None]:
    c = s.stats.read(TASK)
    return c.run_count, c.failure_count, c.last_run_status


def _crashed_claim(s: Stores, clock: Clock, msg: RunMessage, *, attempt: int, max_attempts: int = 3) -> None:
    """The state a worker that died mid-attempt leaves: running, its lease run out."""
    doc = runs.new_doc(msg, status="queued", max_attempts=max_attempts, now=clock.now)
    doc.update(status="running", attempt=attempt, started_at="2027-03-01T12:00:00Z")
    run = runs.new_run(msg, doc, clock.now).evolve(status=RunStatus.RUNNING, lease_until=int(clock.t) - 1)
    assert s.runs.put_if_absent(run)


def test_a_scheduled_fire_is_created_claimed_run_counted_and_completes_its_once_task(s, clock, sqs):
    _task(s)
    msg = _fire()
    assert _process(msg, clock) == "succeeded"
    run = _stored(s, msg)
    assert (run.status, run.attempt, run.lease_until) == (RunStatus.SUCCEEDED, 1, None)
    assert run.doc["steps"][0]["output"] == "hello" and run.doc["start_lag_ms"] == 0
    assert _counts(s) == (1, 0, "succeeded")
    task = s.tasks.get(TASK)
    assert task is not None and task.status is TaskStatus.COMPLETED
    assert sqs == []  # nothing to make visible again
    # a copy of the finished run is dropped, nothing written
    assert _process(msg, clock, receives=2) == "duplicate"
    assert _stored(s, msg) == run and _counts(s) == (1, 0, "succeeded")


def test_a_failure_no_retry_can_fix_fails_at_once_and_is_counted(s, clock, sqs):
    _task(s, payload=BAD_TEMPLATE)
    msg = _fire()
    assert _process(msg, clock) == "failed"
    run = _stored(s, msg)
    assert (run.status, run.attempt, run.doc["error"]["type"]) == (RunStatus.FAILED, 1, "template_error")
    assert _counts(s) == (1, 1, "failed")


def test_a_takeover_with_attempts_left_is_the_next_attempt(s, clock, sqs):
    _task(s)
    msg = _fire()
    _crashed_claim(s, clock, msg, attempt=1)
    assert _process(msg, clock, receives=2) == "succeeded"
    run = _stored(s, msg)
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)
    assert _counts(s) == (1, 0, "succeeded")


def test_a_takeover_of_a_spent_run_fails_it_worker_lost_without_executing(s, clock, sqs):
    _task(s)
    msg = _fire()
    _crashed_claim(s, clock, msg, attempt=3, max_attempts=3)
    assert _process(msg, clock, receives=4) == "worker_lost"
    run = _stored(s, msg)
    assert (run.status, run.attempt, run.lease_until) == (RunStatus.FAILED, 3, None)
    assert run.doc["error"]["type"] == "worker_lost" and run.doc["steps"] == []
    assert run.doc["error"]["message"] == "the worker of attempt 3 of 3 stopped before recording its outcome"
    assert _counts(s) == (1, 1, "failed")
    task = s.tasks.get(TASK)
    assert task is not None and task.status is TaskStatus.COMPLETED  # its last run ended


def test_a_copy_of_a_run_under_a_live_lease_leaves_it_alone(s, clock, sqs):
    _task(s, status=TaskStatus.CANCELED)  # would be skipped, were it not executing elsewhere
    msg = _fire()
    _crashed_claim(s, clock, msg, attempt=1)
    live = _stored(s, msg).evolve(lease_until=int(clock.t) + 60)
    s.runs.items[(TASK, msg.run_id)] = live  # type: ignore[attr-defined]
    assert _process(msg, clock, receives=2) == "in_progress"
    assert _stored(s, msg) == live and _counts(s) == (0, 0, None)


@pytest.mark.parametrize(
    ("status", "version", "reason"),
    [
        (TaskStatus.CANCELED, 1, "task_canceled"),
        (TaskStatus.PAUSED, 1, "task_paused"),
        (TaskStatus.ACTIVE, 0, "superseded"),
    ],
)
def test_fenced_off_runs_are_skipped_and_never_counted(s, clock, sqs, status, version, reason):
    _task(s, status=status)
    msg = _fire(version)
    assert _process(msg, clock) == reason
    run = _stored(s, msg)
    assert (run.status, run.doc["skip_reason"], run.attempt) == (RunStatus.SKIPPED, reason, 0)
    assert _counts(s) == (0, 0, None)


def test_a_dedupe_window_lets_one_run_through(s, clock, sqs):
    _task(s, dedupe_key="nightly", dedupe_window_seconds=600)
    first, second = _run_now(s, clock), _run_now(s, clock)
    assert _process(first, clock) == "succeeded"
    assert _process(second, clock) == "deduplicated"
    assert _stored(s, second).doc["skip_reason"] == "deduplicated"
    clock.advance(601)
    third = _run_now(s, clock)
    assert _process(third, clock) == "succeeded"
    assert _counts(s) == (2, 0, "succeeded")


def test_a_run_waits_for_a_slot_then_runs_and_releases_it(s, clock, sqs):
    _task(s, concurrency_key="crm", concurrency_limit=1)
    other = s.leases.acquire_slot(AGENT, "crm", 1, "another-run", now=int(clock.t), lease=60)
    assert other is not None
    msg = _fire()
    with pytest.raises(worker.ReportFailure):
        _process(msg, clock)
    run = _stored(s, msg)
    assert (run.status, run.attempt) == (RunStatus.QUEUED, 0)  # a wait is not an attempt
    assert sqs == [
        ("ChangeMessageVisibility", {"QueueUrl": "queue", "ReceiptHandle": "receipt", "VisibilityTimeout": 2})
    ]
    s.leases.release_slot(other, "another-run")
    clock.advance(3)
    assert _process(msg, clock, receives=2) == "succeeded"
    # released after the run: the next run takes the slot at once
    assert s.leases.acquire_slot(AGENT, "crm", 1, "next-run", now=int(clock.t), lease=60) is not None


def test_a_wait_for_a_slot_ends_with_concurrency_wait_timeout(s, clock, sqs, monkeypatch):
    _task(s, concurrency_key="crm", concurrency_limit=1)
    assert s.leases.acquire_slot(AGENT, "crm", 1, "stuck-run", now=int(clock.t), lease=86_400)
    msg = _fire()
    receives = 0
    for _ in range(12):  # every 5 minutes for an hour
        receives += 1
        with pytest.raises(worker.ReportFailure):
            _process(msg, clock, receives)
        clock.advance(300)
    assert _stored(s, msg).status is RunStatus.QUEUED  # 12:55: waited 55 minutes
    clock.advance(301)
    assert _process(msg, clock, receives + 1) == "concurrency_wait_timeout"
    run = _stored(s, msg)
    assert (run.status, run.attempt, run.doc["error"]["type"]) == (RunStatus.FAILED, 0, "concurrency_wait_timeout")
    assert _counts(s) == (1, 1, "failed")
    assert s.leases.acquire_slot(AGENT, "crm", 1, "another", now=int(clock.t), lease=60) is None  # not its slot


def test_the_wait_timeout_is_configurable(s, clock, sqs, monkeypatch):
    from chalicelib.platform.config import settings

    monkeypatch.setenv("TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS", "60")
    settings.cache_clear()
    try:
        _task(s, concurrency_key="crm", concurrency_limit=1)
        assert s.leases.acquire_slot(AGENT, "crm", 1, "stuck-run", now=int(clock.t), lease=86_400)
        msg = _run_now(s, clock)
        with pytest.raises(worker.ReportFailure):
            _process(msg, clock)
        clock.advance(61)
        assert _process(msg, clock, 2) == "concurrency_wait_timeout"
    finally:
        monkeypatch.delenv("TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS")
        settings.cache_clear()


def test_a_duplicate_of_a_run_holding_its_slot_does_not_release_it(s, clock, sqs):
    _task(s, concurrency_key="crm", concurrency_limit=1)
    msg = _fire()
    held = s.leases.acquire_slot(AGENT, "crm", 1, msg.run_id, now=int(clock.t), lease=60)
    assert held is not None
    _crashed_claim(s, clock, msg, attempt=1)
    live = _stored(s, msg).evolve(lease_until=int(clock.t) + 60)
    s.runs.items[(TASK, msg.run_id)] = live  # type: ignore[attr-defined]
    # a first delivery of a copy goes straight to the slot (held in its name) and the claim
    assert _process(msg, clock, receives=1) == "in_progress"
    assert s.leases.acquire_slot(AGENT, "crm", 1, "another", now=int(clock.t), lease=60) is None


def test_an_early_message_goes_back_to_the_queue_until_its_instant(s, clock, sqs):
    _task(s)
    msg = _fire()
    clock.advance(-10)
    with pytest.raises(worker.ReportFailure):
        _process(msg, clock)
    assert sqs == [
        ("ChangeMessageVisibility", {"QueueUrl": "queue", "ReceiptHandle": "receipt", "VisibilityTimeout": 10})
    ]
    assert s.runs.get(TASK, msg.run_id) is None
