"""The stuck-run sweep on the in-memory stores: a run past its deadline plus the concurrency wait
plus the grace is failed (`worker_lost` after an attempt, `run_stuck` before) and counted once;
a run within that bound (a crashed worker's redelivery not due yet, a run waiting for a slot, a
retry in its backoff) is left alone; a run finished at the same moment keeps its outcome; the
cursor pages through the table and starts over at its end; the tick reports what it swept."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import store
from chalicelib.dispatch import queue, sweeper, tick
from chalicelib.domain import attempts
from chalicelib.domain.records import Run, RunStatus
from chalicelib.domain.timefmt import epoch, iso
from chalicelib.platform.config import settings
from chalicelib.store import Stores, runs
from chalicelib.store.memory.execution import MemoryRuns, MemoryRunSweep
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
TASK = "00000000-0000-4000-8000-0000000000f1"
WAIT, GRACE = 3600, 900  # the defaults: TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS, TASKAPI_SWEEP_GRACE_SECONDS
BOUND = WAIT + GRACE


@pytest.fixture(autouse=True)
def defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS", "TASKAPI_SWEEP_GRACE_SECONDS", "TASKAPI_SWEEP_PAGE_ITEMS"):
        monkeypatch.delenv(name, raising=False)
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.fixture()
def s() -> Iterator[Stores]:
    chosen = store.in_memory()
    with installed(chosen, queue.MemoryRunQueues(), lambda: NOW.timestamp()):
        yield chosen


def _run(n: int, status: RunStatus, *, attempt: int = 0, ago: int = 0, **doc: Any) -> Run:
    """Run n of the task, fired `ago` seconds before NOW."""
    fire = NOW - timedelta(seconds=ago)
    run_id = runs.scheduled_run_id(TASK, epoch(fire) - n, 1)
    body = {
        "id": run_id,
        "task_id": TASK,
        "trigger": "schedule",
        "status": str(status),
        "attempt": attempt,
        "max_attempts": 3,
        "scheduled_for": iso(fire),
        "queued_at": iso(fire),
        "finished_at": None,
        "next_attempt_at": None,
        "error": None,
        "steps": [],
        **doc,
    }
    return Run(TASK, run_id, "agent-1", status, body, expires_at=NOW + timedelta(days=30))


def _running(n: int, *, lease_ended: int, attempt: int = 1) -> Run:
    """Claimed at its fire, its lease (60 s) ended `lease_ended` seconds before NOW."""
    return _run(n, RunStatus.RUNNING, attempt=attempt, ago=lease_ended + 60).evolve(
        lease_until=epoch(NOW) - lease_ended, claim="c1"
    )


def _put(s: Stores, *made: Run) -> None:
    for r in made:
        assert s.runs.put_if_absent(r)


def _state(s: Stores, r: Run) -> tuple[RunStatus, str | None]:
    got = s.runs.get(r.task_id, r.run_id)
    assert got is not None
    return got.status, (got.doc.get("error") or {}).get("type")


def test_a_run_stuck_running_past_its_lease_and_the_bound_is_failed_worker_lost_and_counted(s: Stores) -> None:
    lost = _running(1, lease_ended=BOUND + 1)
    _put(s, lost)
    assert sweeper.sweep(NOW) == 1
    assert _state(s, lost) == (RunStatus.FAILED, attempts.WORKER_LOST)
    final = s.runs.get(TASK, lost.run_id)
    assert final is not None and final.lease_until is None and final.doc["finished_at"] == iso(NOW)
    assert "attempt 1 of 3" in final.doc["error"]["message"]
    c = s.stats.read(TASK)
    assert (c.run_count, c.failure_count, c.last_run_status) == (1, 1, "failed")
    # A second pass finds it final: nothing failed or counted twice.
    assert sweeper.sweep(NOW) == 0 and s.stats.read(TASK).run_count == 1


def test_a_run_queued_and_never_claimed_past_its_fire_and_the_bound_is_failed_run_stuck(s: Stores) -> None:
    never = _run(1, RunStatus.QUEUED, ago=BOUND + 1)
    retry = _run(
        2, RunStatus.RETRYING, attempt=1, ago=BOUND + 600, next_attempt_at=iso(NOW - timedelta(seconds=BOUND + 1))
    )
    _put(s, never, retry)
    assert sweeper.sweep(NOW) == 2
    assert _state(s, never) == (RunStatus.FAILED, attempts.RUN_STUCK)
    assert _state(s, retry) == (RunStatus.FAILED, attempts.WORKER_LOST)
    assert s.stats.read(TASK).failure_count == 2


def test_runs_within_the_bound_are_never_swept(s: Stores) -> None:
    healthy = [
        _running(1, lease_ended=-30),  # executing under a live lease
        _running(2, lease_ended=GRACE - 1),  # its worker crashed: the redelivery's takeover is not due yet
        _running(3, lease_ended=BOUND - 1),  # the takeover may be waiting for a concurrency slot
        _run(4, RunStatus.QUEUED, ago=WAIT - 5),  # waiting for a concurrency slot, within the wait
        _run(5, RunStatus.QUEUED, ago=BOUND - 1),  # the wait's timeout is the worker's to record
        _run(6, RunStatus.QUEUED, ago=-600),  # a fire still ahead
        # a retry whose backoff ended recently, though its first attempt was long ago
        _run(7, RunStatus.RETRYING, attempt=1, ago=10 * BOUND, next_attempt_at=iso(NOW - timedelta(seconds=60))),
        _run(8, RunStatus.SUCCEEDED, attempt=1, ago=10 * BOUND, finished_at=iso(NOW - timedelta(days=1))),
        _run(9, RunStatus.SKIPPED, ago=10 * BOUND, finished_at=iso(NOW - timedelta(days=1))),
    ]
    _put(s, *healthy)
    expired = _run(10, RunStatus.QUEUED, ago=10 * BOUND).evolve(expires_at=NOW - timedelta(seconds=1))
    _put(s, expired)  # past retention: TTL's to delete, not the sweep's to fail
    assert sweeper.sweep(NOW) == 0
    for r in [*healthy, expired]:
        assert _state(s, r) == (r.status, None), r.run_id
    assert s.stats.read(TASK).run_count == 0


def test_the_bound_follows_the_settings(s: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("TASKAPI_SWEEP_GRACE_SECONDS", "300")
    settings.cache_clear()
    late, within = _running(1, lease_ended=361), _running(2, lease_ended=359)
    _put(s, late, within)
    assert sweeper.sweep(NOW) == 1
    assert _state(s, late) == (RunStatus.FAILED, attempts.WORKER_LOST)
    assert _state(s, within) == (RunStatus.RUNNING, None)


class FinishedMeanwhile(MemoryRuns):
    """A worker records the run's outcome between the sweep's consistent read and its write:
    `get` answers the record as it was, and the worker's fenced finish lands right after."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.armed = False

    def get(self, task_id: str, run_id: str) -> Run | None:
        read = super().get(task_id, run_id)
        if self.armed and read is not None and read.status is RunStatus.RUNNING:
            self.armed = False
            assert self.finish(read, attempts.ended(read, RunStatus.SUCCEEDED, NOW))
        return read


def test_a_run_finished_at_the_same_moment_keeps_its_outcome() -> None:
    base = store.in_memory()
    racing = FinishedMeanwhile(threading_lock(base))
    chosen = Stores(**{**base.__dict__, "runs": racing, "sweep": MemoryRunSweep(racing, threading_lock(base))})
    lost = _running(1, lease_ended=BOUND + 1)
    with installed(chosen, queue.MemoryRunQueues(), lambda: NOW.timestamp()):
        _put(chosen, lost)
        racing.armed = True
        assert sweeper.sweep(NOW) == 0
        assert _state(chosen, lost) == (RunStatus.SUCCEEDED, None)  # the worker's write landed, not the sweep's
        assert not racing.armed  # the race did happen


def threading_lock(s: Stores) -> Any:
    return s.runs._lock  # type: ignore[attr-defined]  # the stores' one lock, shared by the twin's stores


def test_the_cursor_pages_through_the_table_and_starts_over_at_its_end(
    s: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKAPI_SWEEP_PAGE_ITEMS", "2")
    settings.cache_clear()
    made = [_run(n, RunStatus.SUCCEEDED, attempt=1, finished_at=iso(NOW)) for n in range(1, 5)]
    _put(s, *made)
    stuck = _run(9, RunStatus.QUEUED, ago=BOUND + 1)  # sorts first in the twin's key order
    _put(s, stuck)
    sweep = s.sweep
    assert isinstance(sweep, MemoryRunSweep)
    assert sweeper.sweep(NOW) == 1 and sweep.cursor() is not None  # page 1 of 3: it holds the stuck run
    assert sweeper.sweep(NOW) == 0 and sweep.cursor() is not None
    assert sweeper.sweep(NOW) == 0 and sweep.cursor() is None  # the table's end: wrapped
    later = _run(10, RunStatus.QUEUED, ago=BOUND + 1)  # stuck after the pass went by: the next pass finds it
    _put(s, later)
    assert sweeper.sweep(NOW) == 1 and _state(s, later) == (RunStatus.FAILED, attempts.RUN_STUCK)
    assert sweep.pages == 4  # one page a tick, whatever the table holds


def test_the_tick_sweeps_once_and_logs_it(s: Stores, caplog: pytest.LogCaptureFixture) -> None:
    stuck = _running(1, lease_ended=BOUND + 1)
    _put(s, stuck)
    sweep = s.sweep
    assert isinstance(sweep, MemoryRunSweep)
    with caplog.at_level(logging.INFO):
        report = tick.run_tick(NOW)
    assert report.swept == 1 and sweep.pages == 1
    assert _state(s, stuck) == (RunStatus.FAILED, attempts.WORKER_LOST)
    line = next(r for r in caplog.records if r.getMessage() == "tick")
    assert getattr(line, "swept", None) == 1


class Broken(MemoryRunSweep):
    def page(self, cursor: str | None, *, limit: int) -> Any:
        raise RuntimeError("the Scan failed")


def test_a_failing_sweep_never_fails_the_tick_and_keeps_its_cursor() -> None:
    base = store.in_memory()
    broken = Broken(base.runs, threading_lock(base))  # type: ignore[arg-type]
    broken.keep_cursor('["a", "b"]')
    chosen = Stores(**{**base.__dict__, "sweep": broken})
    with installed(chosen, queue.MemoryRunQueues(), lambda: NOW.timestamp()):
        assert tick.run_tick(NOW).swept == 0
    assert broken.cursor() == '["a", "b"]'  # read again next tick


def test_more_pages_a_tick_stop_at_the_tables_end(s: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_SWEEP_PAGE_ITEMS", "2")
    monkeypatch.setenv("TASKAPI_SWEEP_PAGES", "10")
    settings.cache_clear()
    stuck = [_run(n, RunStatus.QUEUED, ago=BOUND + 1) for n in range(1, 6)]
    _put(s, *stuck)
    sweep = s.sweep
    assert isinstance(sweep, MemoryRunSweep)
    assert sweeper.sweep(NOW) == 5 and sweep.pages == 3 and sweep.cursor() is None


def test_a_once_task_whose_only_run_is_swept_completes(s: Stores) -> None:
    from chalicelib.domain.records import Definition, Schedule, ScheduleKind, Task, TaskStatus

    fire = NOW - timedelta(seconds=BOUND + 1)
    task = Task(
        task_id=TASK,
        created_by="agent-1",
        created_at="2027-03-01T10:00:00Z",
        updated_at="2027-03-01T10:00:00Z",
        status=TaskStatus.ACTIVE,
        schedule=Schedule(ScheduleKind.ONCE, iso(fire), "UTC", anchor="2027-03-01T10:00:00Z"),
        definition=Definition.from_fields({"payload": {"steps": [{"id": "s", "type": "log", "message": "x"}]}}),
    )
    s.tasks.put(task)  # type: ignore[attr-defined]
    stuck = _run(0, RunStatus.QUEUED, ago=BOUND + 1)
    stuck = stuck.evolve(run_id=runs.scheduled_run_id(TASK, epoch(fire), 1))
    _put(s, stuck)
    assert sweeper.sweep(NOW) == 1
    assert _state(s, stuck) == (RunStatus.FAILED, attempts.RUN_STUCK)
    done = s.tasks.get(TASK)
    assert done is not None and done.status is TaskStatus.COMPLETED  # not active forever with nothing to run
