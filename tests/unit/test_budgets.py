"""Per-agent run budgets (issue 13, item 4) on the in-memory stores and run queues: fires over an
agent's runs a minute are recorded `skipped` / `budget_exceeded` by the tick (charged once per
agent and tick, whatever the shards), by run now and by event fan-out (partial admission); an
agent that loops cannot starve another; the bucket recovers as time passes; the opt-in runs in
flight ceiling skips a run while the agent's slots are held; a raised minimum interval refuses
schedules that fire more often."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import dispatch, store
from chalicelib.dispatch import budgets, queue
from chalicelib.dispatch import plan as planning
from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.records import (
    Agent,
    AgentStatus,
    Definition,
    RunStatus,
    Schedule,
    ScheduleKind,
    Task,
    TaskStatus,
)
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch
from chalicelib.execution import worker
from chalicelib.platform.config import settings
from chalicelib.services import events, lifecycle, tasks
from chalicelib.services.agents import Caller
from chalicelib.store import runs
from chalicelib.store.memory.services import MemoryAgents
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
T = epoch(NOW)
LOG = {"steps": [{"id": "say", "type": "log", "message": "hi"}]}


class CountingAgents(MemoryAgents):
    """Counts the writes to the run buckets (restart, advance, take)."""

    def __init__(self) -> None:
        super().__init__()  # the fixture hands it the memory world's agents (the task store sees them)
        self.bucket_writes: list[str] = []

    def restart_bucket(self, agent_id: str, bucket: str, tat_ms: int, *, idle_before_ms: int) -> bool:
        self.bucket_writes.append(agent_id)
        return super().restart_bucket(agent_id, bucket, tat_ms, idle_before_ms=idle_before_ms)

    def advance_bucket(self, agent_id: str, bucket: str, step_ms: int, *, low_ms: int, high_ms: int) -> bool:
        self.bucket_writes.append(agent_id)
        return super().advance_bucket(agent_id, bucket, step_ms, low_ms=low_ms, high_ms=high_ms)

    def take_up_to(self, agent_id: str, bucket: str, n: int, *, now_ms: int, step_ms: int, burst: int) -> int:
        self.bucket_writes.append(agent_id)
        return super().take_up_to(agent_id, bucket, n, now_ms=now_ms, step_ms=step_ms, burst=burst)


@dataclasses.dataclass
class World:
    stores: store.Stores
    queues: queue.MemoryRunQueues
    agents: CountingAgents
    t: float = NOW.timestamp()

    def agent(self, **budget: int | None) -> str:
        agent_id = str(uuid.uuid4())
        a = Agent(agent_id, "a", "2027-03-01T00:00:00Z", AgentStatus.ACTIVE, "h", "kms1:c2VhbGVk", **budget)
        assert self.stores.agents.put_if_absent(a)
        return agent_id

    def task(self, agent_id: str, *, due_at: int | None = T + 60, kind: ScheduleKind = ScheduleKind.CRON) -> Task:
        task_id = str(uuid.uuid4())
        task = Task(
            task_id=task_id,
            created_by=agent_id,
            created_at="2027-03-01T00:00:00Z",
            updated_at="2027-03-01T00:00:00Z",
            status=TaskStatus.ACTIVE,
            schedule=Schedule(kind, "* * * * *", "UTC", anchor="2027-03-01T00:00:00Z"),
            definition=Definition.from_fields({"payload": LOG, "max_retries": 0}),
            due_shard=planning.shard_for(task_id) if due_at is not None else None,
            due_at=due_at,
        )
        self.stores.tasks.put(task)  # type: ignore[attr-defined]
        return task

    def history(self, task_id: str) -> list[tuple[RunStatus, str | None]]:
        page = self.stores.runs.newest_first(task_id, before=None, limit=50, now=NOW + timedelta(hours=1))
        return [(r.status, r.doc.get("skip_reason")) for r in page.runs]

    def sent(self) -> list[RunMessage]:
        return [s.message for band in self.queues.sent.values() for s, _ in band]


@pytest.fixture()
def w() -> Iterator[World]:
    base = store.in_memory()
    agents = CountingAgents()
    agents.items, agents.buckets = base.agents.items, base.agents.buckets  # type: ignore[attr-defined]
    agents._lock = base.agents._lock  # type: ignore[attr-defined]
    world = World(dataclasses.replace(base, agents=agents), queue.MemoryRunQueues(), agents)
    with installed(world.stores, world.queues, lambda: world.t):
        yield world


def over_budget(w: World, tasks_: list[Task]) -> list[str]:
    return [t.task_id for t in tasks_ if w.history(t.task_id) == [(RunStatus.SKIPPED, "budget_exceeded")]]


# ---- the tick ----------------------------------------------------------------------------------


def test_the_tick_sends_what_the_budget_admits_and_records_the_rest_over_budget(w: World) -> None:
    loop = w.agent(runs_per_minute=3, runs_burst=3)
    mine = [w.task(loop) for _ in range(5)]  # one fire each at T+60, spread over the due shards
    report = dispatch.run_tick(NOW)
    assert (report.dispatched, report.skipped, report.over_budget) == (3, 2, 2)
    assert len(w.sent()) == 3 and len(over_budget(w, mine)) == 2
    for t in mine:  # every schedule moved on, sent or skipped: the next tick does not meet these fires
        assert w.stores.tasks.get(t.task_id).due_at is None  # type: ignore[union-attr]
    # charged in one go for the whole tick (read with the agent, one write), not once per shard or run
    assert w.agents.bucket_writes == [loop]
    assert w.stores.agents.bucket(loop, "runs") == T * 1000 + 3 * 20_000


def test_a_looping_agent_cannot_starve_another(w: World) -> None:
    loop, calm = w.agent(runs_per_minute=5, runs_burst=5), w.agent()
    looping = [w.task(loop) for _ in range(20)]
    calm_tasks = [w.task(calm) for _ in range(2)]
    report = dispatch.run_tick(NOW)
    assert report.dispatched == 7 and report.over_budget == 15
    by_agent = [m.agent_id for m in w.sent()]
    assert by_agent.count(loop) == 5 and by_agent.count(calm) == 2
    assert len(over_budget(w, looping)) == 15
    assert over_budget(w, calm_tasks) == []  # the calm agent lost nothing


def test_the_bucket_recovers_as_time_passes(w: World) -> None:
    loop = w.agent(runs_per_minute=3, runs_burst=3)
    first = [w.task(loop) for _ in range(5)]
    assert dispatch.run_tick(NOW).dispatched == 3
    # a minute later the bucket has room for three again: the next fires of the 5 schedules
    later = NOW + timedelta(minutes=1)
    w.t = later.timestamp()
    report = dispatch.run_tick(later)
    assert (report.dispatched, report.over_budget) == (3, 2)
    skipped = [h for t in first for h in w.history(t.task_id) if h == (RunStatus.SKIPPED, "budget_exceeded")]
    assert len(skipped) == 4  # two fires of each minute
    # and that tick's charge was written back: a run now at once finds no room
    assert lifecycle.run_now(Caller(loop), first[0].task_id, {}, later)["skip_reason"] == "budget_exceeded"


def test_without_a_budget_of_its_own_an_agent_gets_the_operators_default(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKAPI_AGENT_RUNS_PER_MINUTE", "2")
    monkeypatch.setenv("TASKAPI_AGENT_RUNS_BURST", "2")
    settings.cache_clear()
    try:
        plain, generous = w.agent(), w.agent(runs_per_minute=100, runs_burst=100)
        for a in (plain, generous):
            for _ in range(4):
                w.task(a)
        dispatch.run_tick(NOW)
        by_agent = [m.agent_id for m in w.sent()]
        assert by_agent.count(plain) == 2 and by_agent.count(generous) == 4  # the agent's own value wins
    finally:
        monkeypatch.delenv("TASKAPI_AGENT_RUNS_PER_MINUTE")
        monkeypatch.delenv("TASKAPI_AGENT_RUNS_BURST")
        settings.cache_clear()


def test_a_runs_per_minute_of_zero_turns_the_bucket_off(w: World) -> None:
    free = w.agent(runs_per_minute=0)
    for _ in range(4):
        w.task(free)
    assert dispatch.run_tick(NOW).dispatched == 4
    assert w.agents.bucket_writes == [] and w.stores.agents.bucket(free, "runs") is None


def test_dispatch_on_write_charges_the_budget_too(w: World) -> None:
    a = w.agent(runs_per_minute=60, runs_burst=1)
    # fires within the look-ahead (12:01, 12:02) are dispatched by the create itself
    first = create(a, "* * * * *")
    second = create(a, "* * * * *")
    assert [(m.task_id, m.scheduled_for) for m in w.sent()] == [(first.task_id, T + 60)]  # the earliest goes
    assert w.history(first.task_id) == [(RunStatus.SKIPPED, "budget_exceeded")]  # 12:02
    assert w.history(second.task_id) == [(RunStatus.SKIPPED, "budget_exceeded")] * 2
    assert w.stores.tasks.get(second.task_id).due_at is None  # type: ignore[union-attr]  # moved on


# ---- run now and events -------------------------------------------------------------------------


def test_run_now_over_budget_is_answered_and_recorded_as_skipped(w: World) -> None:
    a = w.agent(runs_per_minute=1, runs_burst=1)
    t = w.task(a, due_at=None)
    first = lifecycle.run_now(Caller(a), t.task_id, {}, NOW)
    second = lifecycle.run_now(Caller(a), t.task_id, {}, NOW)
    assert (first["status"], first["skip_reason"]) == ("queued", None)
    assert (second["status"], second["skip_reason"]) == ("skipped", "budget_exceeded")
    assert [m.run_id for m in w.sent()] == [first["id"]]  # only the admitted run was queued
    stored = w.stores.runs.get(t.task_id, second["id"])
    assert stored is not None and (stored.status, stored.doc["skip_reason"]) == (RunStatus.SKIPPED, "budget_exceeded")
    w.t += 60  # a minute later there is room again
    third = lifecycle.run_now(Caller(a), t.task_id, {}, NOW + timedelta(minutes=1))
    assert third["status"] == "queued"


def listener(agent_id: str) -> str:
    body = {
        "title": "on order",
        "description": "d",
        "schedule_kind": "event",
        "schedule_expr": "order.*",
        "payload": LOG,
        "created_by": agent_id,
    }
    created = tasks.create_task(Caller(agent_id), body, None, NOW)
    assert created.task is not None
    return created.task.task_id


def test_event_fan_out_admits_part_and_records_the_rest_over_budget(w: World) -> None:
    a = w.agent(runs_per_minute=60, runs_burst=3)
    ids = [listener(a) for _ in range(5)]
    out = events.post_event(Caller(a), {"name": "order.created"}, NOW)
    assert [r["task_id"] for r in out["runs"]] == ids  # every listener has its run, oldest first
    skipped = [r for r in out["runs"] if r.get("skip_reason") == "budget_exceeded"]
    assert [r["task_id"] for r in skipped] == ids[3:]  # the oldest three went
    assert sorted(m.task_id for m in w.sent()) == sorted(ids[:3])
    for r in out["runs"]:
        run = w.stores.runs.get(r["task_id"], r["run_id"])
        want = RunStatus.SKIPPED if r in skipped else RunStatus.QUEUED
        assert run is not None and run.status is want
    assert w.agents.bucket_writes == [a]  # one charge for the whole fan-out


def test_a_retried_emit_republishing_its_event_is_not_charged_again(w: World) -> None:
    a = w.agent(runs_per_minute=60, runs_burst=2)
    listener(a)
    key = "run-1|step-1"
    events.emit(a, "order.created", {}, depth=1, now=NOW, key=key, at=T)
    charged = w.stores.agents.bucket(a, "runs")
    events.emit(a, "order.created", {}, depth=1, now=NOW, key=key, at=T)  # the next attempt of that run
    assert w.stores.agents.bucket(a, "runs") == charged


# ---- runs in flight ------------------------------------------------------------------------------


def test_the_tick_stamps_the_in_flight_ceiling_on_the_messages_of_agents_that_have_one(w: World) -> None:
    capped, free = w.agent(runs_in_flight=2), w.agent()
    w.task(capped)
    w.task(free)
    dispatch.run_tick(NOW)
    assert sorted((m.agent_id == capped, m.in_flight) for m in w.sent()) == [(False, 0), (True, 2)]


def test_a_second_concurrent_run_over_the_in_flight_ceiling_is_skipped(w: World) -> None:
    a = w.agent(runs_in_flight=1)
    t = w.task(a, due_at=None, kind=ScheduleKind.CRON)
    first = RunMessage(t.task_id, runs.scheduled_run_id(t.task_id, T, 1), a, "schedule", T, 1, in_flight=1)
    second = RunMessage(t.task_id, runs.scheduled_run_id(t.task_id, T + 60, 1), a, "schedule", T, 1, in_flight=1)
    # the first run executing: it holds the agent's one slot (as the worker takes it)
    held = w.stores.leases.acquire_slot(budgets.IN_FLIGHT, a, 1, first.run_id, now=T, lease=60)
    assert held is not None
    assert worker.process(second.to_json(), "queue", "receipt", NOW) == "budget_exceeded"
    run = w.stores.runs.get(t.task_id, second.run_id)
    assert run is not None and (run.status, run.doc["skip_reason"]) == (RunStatus.SKIPPED, "budget_exceeded")
    # the first one runs in the slot it holds, and gives it back when it ends
    assert worker.process(first.to_json(), "queue", "receipt", NOW) == "succeeded"
    third = RunMessage(t.task_id, runs.adhoc_run_id(T, "manual"), a, "run_now", T, None, in_flight=1)
    doc = runs.new_doc(third, status="queued", max_attempts=1, now=NOW)
    assert runs.put_new(third, doc, NOW)
    assert worker.process(third.to_json(), "queue", "receipt", NOW) == "succeeded"
    assert w.stores.leases.acquire_slot(budgets.IN_FLIGHT, a, 1, "later", now=T, lease=60) is not None  # freed


def test_a_run_message_without_a_ceiling_reads_as_before() -> None:
    msg = RunMessage("t", "r", "a", "schedule", 1, 1)
    assert "in_flight" not in msg.to_json()
    assert RunMessage.from_json(msg.to_json()) == msg
    capped = dataclasses.replace(msg, in_flight=3)
    assert RunMessage.from_json(capped.to_json()).in_flight == 3


# ---- the minimum interval -----------------------------------------------------------------------


def create(agent_id: str, expr: str, **over: Any) -> Task:
    body = {
        "title": "t",
        "description": "d",
        "schedule_kind": "cron",
        "schedule_expr": expr,
        "payload": LOG,
        "created_by": agent_id,
        **over,
    }
    created = tasks.create_task(Caller(agent_id), body, None, NOW)
    assert created.task is not None
    return created.task


def test_a_raised_minimum_interval_refuses_schedules_that_fire_more_often(w: World) -> None:
    a = w.agent(min_interval_seconds=300)
    with pytest.raises(InvalidSchedule) as err:
        create(a, "*/2 * * * *")
    assert [e.field for e in err.value.errors] == ["schedule_expr"]
    assert "120 s apart" in err.value.errors[0].message and "300 s" in err.value.errors[0].message
    with pytest.raises(InvalidSchedule):
        create(a, "0,1 9 * * 1")  # two fires a minute apart once a week: found too
    t = create(a, "*/5 * * * *")  # exactly the interval: allowed
    with pytest.raises(InvalidSchedule):  # and an update is held to it too
        tasks.update_task(Caller(a), t.task_id, {"schedule_expr": "* * * * *"}, None, NOW)
    assert create(w.agent(), "* * * * *").schedule.expr == "* * * * *"  # the default (60 s): today's rule


def test_the_agents_own_interval_wins_over_the_operators(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_MIN_INTERVAL_SECONDS", "3600")
    settings.cache_clear()
    try:
        with pytest.raises(InvalidSchedule):
            create(w.agent(), "*/30 * * * *")
        trusted = w.agent(min_interval_seconds=60)
        assert create(trusted, "* * * * *").status is TaskStatus.ACTIVE
        assert create(w.agent(), "0 * * * *").status is TaskStatus.ACTIVE  # hourly: allowed
    finally:
        monkeypatch.delenv("TASKAPI_MIN_INTERVAL_SECONDS")
        settings.cache_clear()
