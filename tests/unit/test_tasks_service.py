"""Tasks and their lifecycle on the in-memory stores and run queues (no moto): create with the
quota and Idempotency-Keys (replays, a different body, two creates racing on one key), reads
scoped to the caller, listing, updates with If-Match and re-merging on a lost race, and the
transitions (pause, resume, cancel, snooze) with their fencing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import store
from chalicelib.dispatch import queue
from chalicelib.domain import attempts
from chalicelib.domain.errors import (
    Forbidden,
    InvalidInput,
    QuotaExceeded,
    StateConflict,
    TaskNotFound,
    VersionMismatch,
)
from chalicelib.domain.records import Agent, AgentStatus, RunStatus, Task, TaskStatus
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch
from chalicelib.execution import worker
from chalicelib.platform.config import settings
from chalicelib.services import lifecycle, tasks
from chalicelib.services.agents import Caller
from chalicelib.store import Stores, runs
from chalicelib.store.counters import Counters
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


class World:
    def __init__(self) -> None:
        self.stores = store.in_memory()
        self.queues = queue.MemoryRunQueues()
        self.t = NOW.timestamp()

    def agent(self, **over: Any) -> Caller:
        fields: dict[str, Any] = dict(
            agent_id=str(uuid.uuid4()),
            name="a",
            created_at="2027-03-01T00:00:00Z",
            status=AgentStatus.ACTIVE,
            token_hash="h",
            signing_secret="kms1:c2VhbGVk",
        )
        fields.update(over)
        assert self.stores.agents.put_if_absent(Agent(**fields))
        return Caller(fields["agent_id"])

    def stored(self, task_id: str) -> Task:
        t = self.stores.tasks.get(task_id)
        assert t is not None
        return t

    def count(self, caller: Caller) -> int:
        a = self.stores.agents.get(caller.agent_id or "")
        assert a is not None
        return a.task_count


@pytest.fixture()
def w() -> Iterator[World]:
    world = World()
    with installed(world.stores, world.queues, lambda: world.t):
        yield world


def body(caller: Caller, **over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "title": "Nightly report",
        "description": "Collect and send the report",
        "schedule_kind": "cron",
        "schedule_expr": "30 2 * * *",
        "timezone": "Europe/Chisinau",
        "payload": {"steps": [{"id": "say", "type": "log", "message": "hello"}]},
        "created_by": caller.agent_id,
    }
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


def create(caller: Caller, key: str | None = None, **over: Any) -> Task:
    created = tasks.create_task(caller, body(caller, **over), key, NOW)
    assert created.task is not None
    return created.task


# ---- create ---------------------------------------------------------------------------------


def test_create_stores_the_record_and_counts_it(w: World) -> None:
    # GIVEN an agent WHEN it creates a task
    a = w.agent()
    t = create(a, max_retries=2)
    # THEN the stored record is what the service returned, pointed at its first fire
    assert w.stored(t.task_id) == t
    assert t.status is TaskStatus.ACTIVE and t.version == 1 and t.schedule_version == 1
    assert t.definition.max_attempts == 3 and t.schedule.anchor == "2027-03-01T12:00:00Z"
    assert t.due_at == epoch(datetime(2027, 3, 2, 0, 30, tzinfo=UTC))  # 02:30 in Chisinau (UTC+2)
    assert w.count(a) == 1
    rep = tasks.represent(t, NOW, Counters())
    assert rep["next_run_at"] == "2027-03-02T00:30:00Z" and rep["run_count"] == 0 and rep["status"] == "active"
    assert "run_count" not in w.stored(t.task_id).__dict__  # counters live in the stats store only


def test_create_refuses_over_the_quota_and_frees_the_key(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_MAX_TASKS_PER_AGENT", "2")
    settings.cache_clear()
    try:
        a = w.agent()
        create(a), create(a)
        with pytest.raises(QuotaExceeded):
            create(a, key="k1")
        assert w.count(a) == 2 and len(w.stores.tasks.list_by_agent(a.agent_id).tasks) == 2
        assert w.stores.keys.get(f"idem#{a.agent_id}#k1", now=NOW) is None  # a retry may try again
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def test_an_admin_creates_only_for_an_active_agent(w: World) -> None:
    admin = Caller(None, True)
    revoked = w.agent(status=AgentStatus.REVOKED)
    with pytest.raises(InvalidInput, match="revoked"):
        tasks.create_task(admin, body(revoked), None, NOW)
    with pytest.raises(InvalidInput, match="no agent"):
        tasks.create_task(admin, body(Caller(str(uuid.uuid4()))), None, NOW)
    a = w.agent()
    assert tasks.create_task(admin, body(a), None, NOW).task is not None


def test_an_agent_creates_only_for_itself(w: World) -> None:
    a, b = w.agent(), w.agent()
    with pytest.raises(Forbidden):
        tasks.create_task(a, body(b), None, NOW)


def test_a_replay_answers_the_first_response(w: World) -> None:
    a = w.agent()
    first = tasks.create_task(a, body(a), "key-1", NOW)
    assert first.task is not None and first.idempotency_key == f"idem#{a.agent_id}#key-1"
    tasks.remember_response(first.idempotency_key, 201, '{"id": "first"}', {"ETag": '"1"'})
    # the task changes meanwhile; the replay still answers the first response
    lifecycle.pause(a, first.task.task_id, NOW)
    again = tasks.create_task(a, body(a), "key-1", NOW + timedelta(hours=1))
    assert again.task is None and again.replay == {"status": 201, "body": '{"id": "first"}', "headers": {"ETag": '"1"'}}
    assert w.count(a) == 1


def test_a_replay_without_a_kept_response_returns_the_task(w: World) -> None:
    a = w.agent()
    first = create(a, key="key-2")  # the response was never kept (a crash before it)
    again = tasks.create_task(a, body(a), "key-2", NOW)
    assert again.replay is None and again.task == w.stored(first.task_id)
    assert w.count(a) == 1


def test_a_key_reused_with_another_body_conflicts(w: World) -> None:
    a = w.agent()
    create(a, key="key-3")
    with pytest.raises(StateConflict, match="different request body"):
        tasks.create_task(a, body(a, title="other"), "key-3", NOW)


def test_keys_are_per_agent(w: World) -> None:
    a, b = w.agent(), w.agent()
    ta, tb = create(a, key="same"), create(b, key="same")
    assert ta.task_id != tb.task_id and w.count(a) == w.count(b) == 1


def test_an_expired_key_starts_afresh(w: World) -> None:
    a = w.agent()
    first = create(a, key="key-4")
    later = NOW + timedelta(seconds=tasks.IDEMPOTENCY_TTL + 1)
    second = tasks.create_task(a, body(a), "key-4", later)
    assert second.task is not None and second.task.task_id != first.task_id


def test_two_creates_with_one_key_make_one_task(w: World) -> None:
    a = w.agent()
    start = threading.Barrier(8)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def go() -> None:
        start.wait()
        try:
            result: Any = tasks.create_task(a, body(a), "race", NOW)
        except StateConflict as e:  # the other request is still in progress
            result = e
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = {o.task.task_id for o in outcomes if isinstance(o, tasks.Created) and o.task is not None}
    assert len(created) == 1 and len(outcomes) == 8
    assert w.count(a) == 1 and len(w.stores.tasks.list_by_agent(a.agent_id).tasks) == 1


def test_a_once_task_due_now_is_dispatched_on_write(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z", timezone="UTC")
    # sent at once (the tick may run up to a minute later) and out of the due index
    assert [s.message.task_id for band in w.queues.sent.values() for s, _ in band] == [t.task_id]
    assert t == w.stored(t.task_id) and t.due_at is None


# ---- read and list --------------------------------------------------------------------------


def test_load_hides_other_agents_tasks(w: World) -> None:
    a, b = w.agent(), w.agent()
    t = create(a)
    assert tasks.load(a, t.task_id) == t
    assert tasks.load(Caller(None, True), t.task_id) == t
    for caller, task_id in ((b, t.task_id), (a, str(uuid.uuid4())), (a, "not-a-uuid")):
        with pytest.raises(TaskNotFound):
            tasks.load(caller, task_id)


def test_list_pages_newest_first_within_the_caller(w: World) -> None:
    a, b = w.agent(), w.agent()
    mine = [create(a, title=f"t{i}") for i in range(5)]
    create(b)
    lifecycle.pause(a, mine[0].task_id, NOW)
    page = tasks.list_tasks(a, {"limit": "2"}, NOW)
    assert [t["title"] for t in page["tasks"]] == ["t4", "t3"] and page["next_offset"] == 2
    last = tasks.list_tasks(a, {"limit": "2", "offset": "4"}, NOW)
    assert [t["title"] for t in last["tasks"]] == ["t0"] and last["next_offset"] is None
    paused = tasks.list_tasks(a, {"status": "paused"}, NOW)
    assert [t["status"] for t in paused["tasks"]] == ["paused"]
    assert len(tasks.list_tasks(Caller(None, True), {"limit": "200"}, NOW)["tasks"]) == 6
    with pytest.raises(Forbidden):
        tasks.list_tasks(a, {"created_by": str(b.agent_id)}, NOW)
    with pytest.raises(InvalidInput):
        tasks.list_tasks(a, {"status": "sleeping"}, NOW)


# ---- update ---------------------------------------------------------------------------------


def test_an_update_without_schedule_change_keeps_the_schedule_version_and_anchor(w: World) -> None:
    a = w.agent()
    t = create(a)
    later = NOW + timedelta(hours=1)
    u = tasks.update_task(a, t.task_id, {"title": "renamed", "max_retries": 5}, '"1"', later)
    assert u.version == 2 and u.schedule_version == 1 and u.schedule.anchor == t.schedule.anchor
    assert u.definition.title == "renamed" and u.definition.max_attempts == 6 and u.due_at == t.due_at
    assert w.stored(t.task_id) == u
    with pytest.raises(VersionMismatch):
        tasks.update_task(a, t.task_id, {"title": "stale"}, '"1"', later)


def test_a_schedule_change_restarts_the_schedule(w: World) -> None:
    a = w.agent()
    t = create(a)
    later = NOW + timedelta(hours=1)
    u = tasks.update_task(a, t.task_id, {"schedule_expr": "0 5 * * *"}, None, later)
    assert u.schedule_version == 2 and u.schedule.anchor == "2027-03-01T13:00:00Z"
    assert u.due_at == epoch(datetime(2027, 3, 2, 3, 0, tzinfo=UTC))


def test_a_changed_event_pattern_moves_the_event_key(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_kind="event", schedule_expr="order.*", timezone="UTC")
    assert t.event_key == f"{a.agent_id}#order.*" and t.due_at is None
    tasks.update_task(a, t.task_id, {"schedule_expr": "invoice.*"}, None, NOW)
    assert [x.task_id for x in w.stores.tasks.by_event_key([f"{a.agent_id}#invoice.*"])] == [t.task_id]
    assert w.stores.tasks.by_event_key([f"{a.agent_id}#order.*"]) == []


class RacingTasks:
    """A task store whose first save loses to another writer (which pauses the task)."""

    def __init__(self, stores: Stores) -> None:
        self.inner = stores.tasks
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def save_if_unchanged(self, read: Task, new: Task) -> Task | None:
        if self.lost == 0:
            self.lost += 1
            self.inner.save_if_unchanged(read, read.evolve(status=TaskStatus.PAUSED, due_at=None, due_shard=None))
        return self.inner.save_if_unchanged(read, new)


def test_an_update_that_loses_a_race_re_merges_onto_the_new_state(w: World) -> None:
    from dataclasses import replace

    a = w.agent()
    t = create(a)
    racing = RacingTasks(w.stores)
    store.use(replace(w.stores, tasks=racing))
    u = tasks.update_task(a, t.task_id, {"title": "after the race"}, None, NOW)
    assert racing.lost == 1
    # the other writer's pause stands, and the title is merged onto it
    assert u.status is TaskStatus.PAUSED and u.definition.title == "after the race" and u.version == 3


def test_a_canceled_task_no_longer_changes(w: World) -> None:
    a = w.agent()
    t = create(a)
    lifecycle.cancel(a, t.task_id, NOW)
    with pytest.raises(StateConflict):
        tasks.update_task(a, t.task_id, {"title": "x"}, None, NOW)


# ---- lifecycle ------------------------------------------------------------------------------


def test_pause_fences_and_resume_restarts_from_now(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_expr="0 * * * *", timezone="UTC")
    p = lifecycle.pause(a, t.task_id, NOW)
    assert p.status is TaskStatus.PAUSED and p.schedule_version == 2 and p.due_at is None and p.version == 2
    assert lifecycle.pause(a, t.task_id, NOW) == p  # a no-op: nothing written
    later = NOW + timedelta(hours=3, minutes=10)
    r = lifecycle.resume(a, t.task_id, later)
    assert r.status is TaskStatus.ACTIVE and r.schedule_version == 3
    assert r.due_at == epoch(datetime(2027, 3, 1, 16, 0, tzinfo=UTC))  # missed fires are not run


def test_cancel_releases_the_quota_slot_once(w: World) -> None:
    a = w.agent()
    t = create(a)
    assert w.count(a) == 1
    c = lifecycle.cancel(a, t.task_id, NOW)
    assert c.status is TaskStatus.CANCELED and w.count(a) == 0
    assert lifecycle.cancel(a, t.task_id, NOW) == c  # again: no write, no second release
    assert w.count(a) == 0
    for change in (lifecycle.pause, lifecycle.resume):
        with pytest.raises(StateConflict):
            change(a, t.task_id, NOW)


def test_two_concurrent_pauses_write_once(w: World) -> None:
    a = w.agent()
    t = create(a)
    start = threading.Barrier(6)
    out: list[Task] = []

    def go() -> None:
        start.wait()
        out.append(lifecycle.pause(a, t.task_id, NOW))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert {x.version for x in out} == {2} and w.stored(t.task_id).schedule_version == 2


def test_snooze_moves_the_next_fire_and_keeps_the_schedule_version(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_expr="0 * * * *", timezone="UTC")
    s = lifecycle.snooze(a, t.task_id, {"delay_seconds": 600, "reason": "maintenance"}, NOW)
    assert s.due_at == epoch(datetime(2027, 3, 1, 13, 10, tzinfo=UTC)) and s.schedule_version == 1
    assert s.snoozed_until == "2027-03-01T13:10:00Z" and s.snooze_reason == "maintenance"
    rep = tasks.represent(s, NOW, Counters())
    assert rep["next_run_at"] == "2027-03-01T13:10:00Z" and rep["snooze_reason"] == "maintenance"


def test_snooze_of_an_event_task_holds_its_runs(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_kind="event", schedule_expr="x.*", timezone="UTC")
    s = lifecycle.snooze(a, t.task_id, {"delay_seconds": 60}, NOW)
    assert s.snoozed_until == "2027-03-01T12:01:00Z" and s.due_at is None
    paused = lifecycle.pause(a, t.task_id, NOW)
    with pytest.raises(StateConflict):
        lifecycle.snooze(a, paused.task_id, {"delay_seconds": 60}, NOW)


def _fire_record(w: World, t: Task, fire: int, status: RunStatus, now: datetime) -> RunMessage:
    """The pending fire's run as a worker left it: `queued` waiting for a concurrency slot, or
    `running` under its claim."""
    msg = RunMessage(t.task_id, runs.scheduled_run_id(t.task_id, fire, 1), t.created_by, "schedule", fire, 1)
    doc = runs.new_doc(msg, status="queued", max_attempts=t.definition.max_attempts, now=now)
    run = runs.new_run(msg, doc, now)
    if status is RunStatus.RUNNING:
        run = attempts.take(run, epoch(now) + 60, now, "c1")
    assert w.stores.runs.put_if_absent(run)
    return msg


def _status(w: World, t: Task, fire: int) -> tuple[RunStatus, str | None] | None:
    run = w.stores.runs.get(t.task_id, runs.scheduled_run_id(t.task_id, fire, 1))
    return None if run is None else (run.status, run.doc.get("skip_reason"))


def test_snooze_stops_a_fire_queued_behind_a_concurrency_slot(w: World) -> None:
    # GIVEN an every-minute task whose 12:01 fire was delivered and waits for a concurrency slot
    a = w.agent()
    t = create(a, schedule_expr="* * * * *", timezone="UTC", concurrency_key="k")
    fire = epoch(NOW) + 60
    msg = _fire_record(w, t, fire, RunStatus.QUEUED, NOW + timedelta(seconds=60))
    # WHEN the agent snoozes it (the request read the clock a moment before the fire)
    s = lifecycle.snooze(a, t.task_id, {"delay_seconds": 600}, NOW + timedelta(seconds=59))
    # THEN the waiting delivery will not run it: it runs once, at the moved instant
    assert s.due_at == fire + 600
    assert _status(w, t, fire) == (RunStatus.SKIPPED, "superseded")
    assert _status(w, t, fire + 600) is None  # the moved execution is still to run
    when = datetime.fromtimestamp(fire + 1, tz=UTC)
    assert worker.process(msg.to_json(), "queue", "receipt", when, receive_count=2) == "duplicate"


def test_snooze_of_an_execution_that_already_started_does_not_run_it_again(w: World) -> None:
    a = w.agent()
    t = create(a, schedule_expr="* * * * *", timezone="UTC", concurrency_key="k")
    fire = epoch(NOW) + 60
    _fire_record(w, t, fire, RunStatus.RUNNING, NOW + timedelta(seconds=60))
    s = lifecycle.snooze(a, t.task_id, {"delay_seconds": 600}, NOW + timedelta(seconds=59))
    assert s.due_at == fire + 600
    assert _status(w, t, fire) == (RunStatus.RUNNING, None)  # it runs: it had started
    assert _status(w, t, fire + 600) == (RunStatus.SKIPPED, "superseded")  # and is not run again
    assert _status(w, t, fire + 60) == (RunStatus.SKIPPED, "superseded")  # a later fire the snooze skips
