"""Lifecycle races on the in-memory stores: a pause, cancel or schedule change committed after
the worker read the task and before it claimed the run stops the run (issue 13, item 7). The
store double commits the change exactly between the read and the claim."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.domain import attempts
from chalicelib.domain.records import Definition, Run, RunStatus, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.domain.runs import RunMessage
from chalicelib.execution import worker
from chalicelib.platform import wiring
from chalicelib.store import Stores, in_memory, runs, use
from chalicelib.store.memory.execution import MemoryRuns

T0 = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
TASK, AGENT = "00000000-0000-4000-8000-0000000000d1", "agent-1"
LOG = {"steps": [{"id": "say", "type": "log", "message": "hello"}]}


class RacingRuns(MemoryRuns):
    """The run store, with a change to the task committed just before each claim."""

    def __init__(self) -> None:
        super().__init__()
        self.before_claim: Callable[[], None] = lambda: None
        self.claims = 0

    def claim_run(
        self, run: Run, *, seen: Run | None, lease_until: int, now: datetime, claim: str
    ) -> attempts.ClaimOutcome:
        self.claims += 1
        self.before_claim()
        return super().claim_run(run, seen=seen, lease_until=lease_until, now=now, claim=claim)


@pytest.fixture()
def s() -> Iterator[Stores]:
    wiring.set_clock(lambda: T0, sleep=lambda _: None)
    chosen = dataclasses.replace(in_memory(), runs=RacingRuns())
    use(chosen)
    yield chosen
    use(None)
    wiring.reset()


@pytest.fixture(autouse=True)
def sqs() -> Iterator[list[str]]:
    """Every SQS call the worker makes, answered here (nothing leaves the process)."""
    calls: list[str] = []

    def answer(model: Any, params: dict[str, Any], **_: Any) -> Any:
        calls.append(model.name)
        return SimpleNamespace(status_code=200), {}

    client = wiring.client("sqs")
    client.meta.events.register("before-call.sqs", answer)
    yield calls
    client.meta.events.unregister("before-call.sqs", answer)


def _task(s: Stores) -> Task:
    task = Task(
        task_id=TASK,
        created_by=AGENT,
        created_at="2027-03-01T11:00:00Z",
        updated_at="2027-03-01T11:00:00Z",
        status=TaskStatus.ACTIVE,
        schedule=Schedule(ScheduleKind.CRON, "0 * * * *"),
        definition=Definition.from_fields({"payload": LOG, "max_retries": 0}),
        schedule_version=1,
    )
    s.tasks.put(task)  # type: ignore[attr-defined]
    return task


def _racing(s: Stores) -> RacingRuns:
    assert isinstance(s.runs, RacingRuns)
    return s.runs


def _commit(s: Stores, **change: Any) -> Callable[[], None]:
    """A lifecycle write (what pause/cancel/a schedule update store), committed once."""

    def commit() -> None:
        current = s.tasks.get(TASK)
        assert current is not None
        if all(getattr(current, k) == v for k, v in change.items()):
            return
        assert s.tasks.save_if_unchanged(current, current.evolve(**change)) is not None

    return commit


def _fire() -> RunMessage:
    return RunMessage(TASK, runs.scheduled_run_id(TASK, int(T0), 1), AGENT, "schedule", int(T0), 1)


def _process(msg: RunMessage, receives: int = 1) -> str:
    return worker.process(msg.to_json(), "queue", "receipt", wiring.now_precise(), receives)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": TaskStatus.PAUSED}, "task_paused"),
        ({"status": TaskStatus.CANCELED}, "task_canceled"),
        ({"schedule_version": 2}, "superseded"),
    ],
)
@pytest.mark.parametrize("receives", [1, 2])  # the claim-first path and the read-first one
def test_a_change_committed_between_the_read_and_the_claim_stops_the_run(s, change, reason, receives):
    _task(s)
    _racing(s).before_claim = _commit(s, **change)
    msg = _fire()
    assert _process(msg, receives) == reason
    assert _racing(s).claims == 1  # the race was run: the change landed inside the claim's window
    run = s.runs.get(TASK, msg.run_id)
    assert run is not None
    assert (run.status, run.doc.get("skip_reason"), run.lease_until) == (RunStatus.SKIPPED, reason, None)
    assert not run.doc.get("steps")  # the pipeline never ran
    assert s.stats.read(TASK).run_count == 0  # skipped runs are not counted, as before


def test_run_now_goes_ahead_through_a_pause_but_not_through_a_cancel(s):
    _task(s)
    msg = RunMessage(TASK, runs.adhoc_run_id(int(T0), "manual"), AGENT, "run_now", int(T0), None)
    assert runs.put_new(msg, runs.new_doc(msg, status="queued", max_attempts=1, now=wiring.now()), wiring.now())
    _racing(s).before_claim = _commit(s, status=TaskStatus.PAUSED)
    assert _process(msg) == "succeeded"
    msg2 = RunMessage(TASK, runs.adhoc_run_id(int(T0), "again"), AGENT, "run_now", int(T0), None)
    assert runs.put_new(msg2, runs.new_doc(msg2, status="queued", max_attempts=1, now=wiring.now()), wiring.now())
    _racing(s).before_claim = _commit(s, status=TaskStatus.CANCELED)
    assert _process(msg2) == "task_canceled"


def test_an_edit_committed_before_the_claim_is_what_runs(s):
    """A run that goes ahead executes the task as read after its claim."""
    task = _task(s)
    fields = {**task.definition.fields(), "payload": {"steps": [{"id": "say", "type": "log", "message": "edited"}]}}
    _racing(s).before_claim = _commit(s, definition=Definition.from_fields(fields))
    msg = _fire()
    assert _process(msg) == "succeeded"
    run = s.runs.get(TASK, msg.run_id)
    assert run is not None and run.doc["steps"][0]["output"] == "edited"
