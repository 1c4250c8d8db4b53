"""A revoked agent's tasks stop running (issue 13, item 7), on the in-memory stores: the tick
records their fires `skipped` / `agent_revoked` instead of sending them, reading each distinct
agent once per tick; the worker skips such a run already on a queue before executing it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib import dispatch, store
from chalicelib.dispatch import plan as planning
from chalicelib.dispatch import queue
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
from chalicelib.platform import wiring
from chalicelib.store import runs
from chalicelib.store.memory.services import MemoryAgents

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
T = epoch(NOW)
HTTP = {"steps": [{"id": "call", "type": "http", "method": "GET", "url": "https://example.invalid/x"}]}
LOG = {"steps": [{"id": "say", "type": "log", "message": "hi"}]}


class CountingAgents(MemoryAgents):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, agent_id: str) -> Agent | None:
        self.reads.append(agent_id)
        return super().get(agent_id)

    def get_with_bucket(self, agent_id: str, bucket: str) -> tuple[Agent | None, int | None]:
        self.reads.append(agent_id)
        return super().get_with_bucket(agent_id, bucket)


@dataclasses.dataclass
class World:
    stores: store.Stores
    queues: queue.MemoryRunQueues
    agents: CountingAgents
    sqs: list[str]


@pytest.fixture()
def w() -> Iterator[World]:
    agents = CountingAgents()
    chosen = dataclasses.replace(store.in_memory(), agents=agents)
    world = World(chosen, queue.MemoryRunQueues(), agents, [])
    store.use(chosen)
    queue.use(world.queues)
    wiring.set_clock(lambda: NOW.timestamp(), sleep=lambda _: None)

    def answer(model: Any, params: dict[str, Any], **_: Any) -> Any:
        world.sqs.append(model.name)
        return SimpleNamespace(status_code=200), {}

    client = wiring.client("sqs")
    client.meta.events.register("before-call.sqs", answer)
    yield world
    client.meta.events.unregister("before-call.sqs", answer)
    store.use(None)
    queue.use(None)
    wiring.reset()


def _agent(w: World, agent_id: str, *, revoked: bool) -> None:
    status = AgentStatus.REVOKED if revoked else AgentStatus.ACTIVE
    assert w.stores.agents.put_if_absent(Agent(agent_id, agent_id, "2027-03-01T00:00:00Z", status, "h", "s"))


def _task(w: World, task_id: str, agent_id: str, payload: Any = LOG, *, due_at: int | None = None) -> Task:
    task = Task(
        task_id=task_id,
        created_by=agent_id,
        created_at="2027-03-01T00:00:00Z",
        updated_at="2027-03-01T00:00:00Z",
        status=TaskStatus.ACTIVE,
        schedule=Schedule(ScheduleKind.CRON, "* * * * *", "UTC", anchor="2027-03-01T00:00:00Z"),
        definition=Definition.from_fields({"payload": payload, "max_retries": 0}),
        schedule_version=1,
        due_shard=planning.shard_for(task_id) if due_at is not None else None,
        due_at=due_at,
    )
    w.stores.tasks.put(task)  # type: ignore[attr-defined]
    return task


def _history(w: World, task_id: str) -> list[tuple[RunStatus, str | None]]:
    page = w.stores.runs.newest_first(task_id, before=None, limit=50, now=NOW)
    return [(r.status, r.doc.get("skip_reason")) for r in page.runs]


def test_the_tick_records_a_revoked_agents_fires_skipped_and_sends_the_others(w: World) -> None:
    _agent(w, "gone", revoked=True)
    _agent(w, "live", revoked=False)
    for n in range(3):  # three tasks of the revoked agent, one of the live one
        _task(w, f"gone-{n}", "gone", due_at=T + 60)
    _task(w, "live-0", "live", due_at=T + 60)
    report = dispatch.run_tick(NOW)
    assert [s.message.task_id for band in w.queues.sent.values() for s, _ in band] == ["live-0"]
    assert (report.dispatched, report.skipped) == (1, 3)
    for n in range(3):
        assert _history(w, f"gone-{n}") == [(RunStatus.SKIPPED, "agent_revoked")]
        # the schedule moved on: the next tick does not find the same fire again
        assert w.stores.tasks.get(f"gone-{n}").due_at is None  # type: ignore[union-attr]
    assert _history(w, "live-0") == []  # sent, not yet run
    # each distinct agent read once this tick, whatever its number of tasks
    assert sorted(w.agents.reads) == ["gone", "live"]
    # AND the next minute: the revoked agent's fires are skipped again, never sent
    w.agents.reads.clear()
    report = dispatch.run_tick(NOW + timedelta(minutes=1))
    assert report.skipped == 3 and all(s.message.task_id == "live-0" for b in w.queues.sent.values() for s, _ in b)
    assert sorted(w.agents.reads) == ["gone", "live"]


def test_an_agent_without_a_record_is_not_taken_for_revoked(w: World) -> None:
    _task(w, "orphan", "nobody", due_at=T + 60)
    assert dispatch.run_tick(NOW).dispatched == 1


def _queued_fire(task: Task) -> RunMessage:
    return RunMessage(task.task_id, runs.scheduled_run_id(task.task_id, T, 1), task.created_by, "schedule", T, 1)


def test_the_worker_skips_a_queued_run_of_an_agent_revoked_since_dispatch(w: World) -> None:
    _agent(w, "gone", revoked=False)
    task = _task(w, "t-http", "gone", HTTP)
    msg = _queued_fire(task)  # dispatched while the agent was active
    assert w.stores.agents.revoke("gone") is not None
    assert worker.process(msg.to_json(), "queue", "receipt", wiring.now_precise()) == "agent_revoked"
    run = w.stores.runs.get(task.task_id, msg.run_id)
    assert run is not None and (run.status, run.doc["skip_reason"]) == (RunStatus.SKIPPED, "agent_revoked")
    assert not run.doc.get("steps")  # nothing was called


def test_a_pipeline_that_reaches_nothing_outside_does_not_read_the_agent(w: World) -> None:
    _agent(w, "live", revoked=False)
    task = _task(w, "t-log", "live", LOG)
    assert worker.process(_queued_fire(task).to_json(), "queue", "receipt", wiring.now_precise()) == "succeeded"
    assert w.agents.reads == []


EMIT = {"steps": [{"id": "tell", "type": "emit", "name": "job.done", "data": {}}]}


def _listener(w: World, task_id: str, agent_id: str) -> None:
    task = _task(w, task_id, agent_id)
    listening = dataclasses.replace(
        task, schedule=Schedule(ScheduleKind.EVENT, "job.*", "UTC", anchor="2027-03-01T00:00:00Z")
    )
    w.stores.tasks.put(listening)  # type: ignore[attr-defined]


def test_the_worker_skips_an_emit_only_run_of_a_revoked_agent(w: World) -> None:
    """An emit starts more runs: it is checked like a pipeline that reaches out."""
    _agent(w, "gone", revoked=False)
    _listener(w, "t-listens", "gone")
    task = _task(w, "t-emit", "gone", EMIT)
    msg = _queued_fire(task)
    assert w.stores.agents.revoke("gone") is not None
    assert worker.process(msg.to_json(), "queue", "receipt", wiring.now_precise()) == "agent_revoked"
    assert _history(w, "t-emit") == [(RunStatus.SKIPPED, "agent_revoked")]
    assert w.queues.run_ids() == [] and _history(w, "t-listens") == []  # no event, no listener run


def test_an_emit_reuses_the_agent_read_at_the_claim(w: World) -> None:
    _agent(w, "live", revoked=False)
    _listener(w, "t-listens", "live")
    task = _task(w, "t-emit", "live", EMIT)
    assert worker.process(_queued_fire(task).to_json(), "queue", "receipt", wiring.now_precise()) == "succeeded"
    assert len(w.queues.run_ids()) == 1  # the listener's run
    assert w.agents.reads == ["live"]  # once: the claim's read serves the fan-out's budget too
