"""Events, AWS events and run-now on the in-memory stores and run queues (no moto): which
tasks an event starts, what it stores, a snoozed listener, duplicates of an AWS event, and a
run whose message the queue refuses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import store
from chalicelib.dispatch import queue
from chalicelib.domain.errors import InvalidInput, StateConflict, StepFailed
from chalicelib.domain.records import Agent, AgentStatus, RunStatus
from chalicelib.domain.timefmt import epoch
from chalicelib.execution import worker
from chalicelib.platform.config import settings
from chalicelib.services import awsevents, events, lifecycle, tasks
from chalicelib.services.agents import Caller
from chalicelib.store import Stores
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture()
def mem() -> Iterator[tuple[Stores, queue.MemoryRunQueues]]:
    stores, queues = store.in_memory(), queue.MemoryRunQueues()
    with installed(stores, queues, lambda: NOW.timestamp()):
        yield stores, queues


def agent(stores: Stores, status: AgentStatus = AgentStatus.ACTIVE) -> Caller:
    agent_id = str(uuid.uuid4())
    stores.agents.put_if_absent(Agent(agent_id, "a", "2027-03-01T00:00:00Z", status, "h", "kms1:c2VhbGVk"))
    return Caller(agent_id)


def listener(caller: Caller, pattern: str, **over: Any) -> str:
    body = {
        "title": f"on {pattern}",
        "description": "d",
        "schedule_kind": "event",
        "schedule_expr": pattern,
        "payload": {"steps": [{"id": "s", "type": "log", "message": "hi"}]},
        "created_by": caller.agent_id,
        **over,
    }
    created = tasks.create_task(caller, body, None, NOW)
    assert created.task is not None
    return created.task.task_id


def sent(queues: queue.MemoryRunQueues) -> list[tuple[str, str, int]]:
    return [(b, s.message.task_id, s.message.scheduled_for) for b, band in queues.sent.items() for s, _ in band]


def test_an_event_starts_the_agents_matching_active_listeners(mem: tuple[Stores, queue.MemoryRunQueues]) -> None:
    stores, queues = mem
    a, b = agent(stores), agent(stores)
    exact, prefix, anything = listener(a, "order.created"), listener(a, "order.*"), listener(a, "*", priority=2)
    listener(a, "invoice.*")
    paused = listener(a, "order.*")
    lifecycle.pause(a, paused, NOW)
    listener(b, "order.created")  # another agent's: never started by a's events
    out = events.post_event(a, {"name": "order.created", "data": {"n": 1}}, NOW)
    assert [r["task_id"] for r in out["runs"]] == [exact, prefix, anything]  # oldest listener first
    assert sorted(sent(queues)) == sorted(
        [("normal", exact, epoch(NOW)), ("normal", prefix, epoch(NOW)), ("high", anything, epoch(NOW))]
    )
    for r in out["runs"]:
        run = stores.runs.get(r["task_id"], r["run_id"])
        assert run is not None and run.status is RunStatus.QUEUED and run.doc["event"]["data"] == {"n": 1}
    stored = stores.events.get(str(a.agent_id), out["event_id"])
    assert stored is not None and stored.name == "order.created" and list(stored.runs) == out["runs"]
    assert stored.expires_at == NOW + timedelta(days=30)
    assert events.load(str(a.agent_id), out["event_id"]) == {
        "id": out["event_id"],
        "name": "order.created",
        "data": {"n": 1},
        "time": "2027-03-01T12:00:00Z",
    }
    assert events.load(str(b.agent_id), out["event_id"]) is None


def test_a_snoozed_listener_runs_when_its_snooze_ends(mem: tuple[Stores, queue.MemoryRunQueues]) -> None:
    stores, queues = mem
    a = agent(stores)
    t = listener(a, "tick")
    lifecycle.snooze(a, t, {"delay_seconds": 120}, NOW)
    events.post_event(a, {"name": "tick"}, NOW)
    assert sent(queues) == [("normal", t, epoch(NOW) + 120)]


def test_a_redelivered_aws_event_publishes_once(mem: tuple[Stores, queue.MemoryRunQueues]) -> None:
    stores, queues = mem
    a = agent(stores)
    t = listener(a, "aws.s3.*")
    delivery = {
        "agent_id": a.agent_id,
        "event": {"id": "e-1", "source": "aws.s3", "detail-type": "Object Created", "detail": {"k": "v"}},
    }
    first = awsevents.handle(delivery, NOW)
    assert first["name"] == "aws.s3.object_created" and [r["task_id"] for r in first["runs"]] == [t]
    assert awsevents.handle(delivery, NOW) == {"published": None, "duplicate": True}
    assert len(sent(queues)) == 1
    revoked = agent(stores, AgentStatus.REVOKED)
    assert awsevents.handle({**delivery, "agent_id": revoked.agent_id}, NOW)["dropped"] == "agent_revoked"
    assert awsevents.handle({**delivery, "agent_id": str(uuid.uuid4())}, NOW)["dropped"] == "unknown_agent"


def test_run_now_queues_a_run_and_a_refused_message_fails_it(mem: tuple[Stores, queue.MemoryRunQueues]) -> None:
    stores, queues = mem
    a = agent(stores)
    t = listener(a, "x")
    doc = lifecycle.run_now(a, t, {"input": {"q": 1}}, NOW)
    run = stores.runs.get(t, doc["id"])
    assert run is not None and run.status is RunStatus.QUEUED and doc["trigger"] == "run_now"
    assert sent(queues) == [("normal", t, epoch(NOW))]
    queue.use(Refusing())
    with pytest.raises(RuntimeError):
        lifecycle.run_now(a, t, {}, NOW)
    [failed] = [r for r in stores.runs.items.values() if r.run_id != doc["id"]]  # type: ignore[attr-defined]
    assert failed.status is RunStatus.FAILED and failed.doc["error"]["type"] == "enqueue_failed"
    lifecycle.cancel(a, t, NOW)
    with pytest.raises(StateConflict):
        lifecycle.run_now(a, t, {}, NOW)


class Refusing(queue.MemoryRunQueues):
    """A queue that accepts nothing."""

    def send_batch(self, band: str, sends: Any) -> set[str]:
        return set()


# ---- the breadth of an event chain ------------------------------------------------------------


@pytest.fixture()
def chain_max(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("TASKAPI_EVENT_CHAIN_MAX_RUNS", "12")
    settings.cache_clear()
    yield 12
    settings.cache_clear()


def _emit(caller: Caller, n: int, chain: str | None) -> str:
    return events.emit(
        caller.agent_id or "", "loop.x", {}, depth=1, now=NOW, key=f"run-{n}|e", at=epoch(NOW), chain=chain
    )


def test_a_chain_starts_at_most_its_budget_of_runs(mem: tuple[Stores, queue.MemoryRunQueues], chain_max: int) -> None:
    stores, queues = mem
    a, b = agent(stores), agent(stores)
    for _ in range(5):
        listener(a, "loop.*")
    listener(b, "loop.*")
    root = "1803902400-00000000000000aa"
    # two fan-outs of 5 fit in 12; the third would make 15: refused, not retried, nothing started
    _emit(a, 1, root), _emit(a, 2, root)
    assert len(set(queues.run_ids())) == 10
    _emit(a, 1, root)  # a retried attempt's emit: the same event, its runs counted once
    assert stores.events.chains[a.agent_id, root] == 10  # type: ignore[attr-defined]
    with pytest.raises(StepFailed) as refused:
        _emit(a, 3, root)
    assert refused.value.type == "chain_too_broad" and not refused.value.retryable
    assert "more than 12 runs" in refused.value.message
    assert len(set(queues.run_ids())) == 10
    # another chain, and another agent's chain of the same id, have budgets of their own
    _emit(a, 4, "1803902400-00000000000000bb")
    _emit(b, 5, root)
    assert len(set(queues.run_ids())) == 16
    # an emitted event without a chain starts one (its own id), charged as well
    _emit(a, 6, None)
    assert len(set(queues.run_ids())) == 21


def test_post_events_continues_a_chain_and_is_refused_past_its_budget(
    mem: tuple[Stores, queue.MemoryRunQueues], chain_max: int
) -> None:
    stores, queues = mem
    a = agent(stores)
    for _ in range(5):
        listener(a, "loop.*")
    # the agent's own event is the root: its fan-out is not charged, whatever its size
    root = events.post_event(a, {"name": "loop.go"}, NOW)
    assert len(root["runs"]) == 5
    msgs = [s.message for band in queues.sent.values() for s, _ in band]
    assert {m.chain for m in msgs} == {root["event_id"]} and {m.depth for m in msgs} == {0}
    # a task's HTTP step that POSTs /events carries depth and chain (headers): charged to the root
    for _ in range(2):
        events.post_event(a, {"name": "loop.go"}, NOW, depth=1, chain=root["event_id"])
    with pytest.raises(InvalidInput) as refused:
        events.post_event(a, {"name": "loop.go"}, NOW, depth=1, chain=root["event_id"])
    assert "X-Tasks-Event-Chain" in str(refused.value.errors) and len(queues.run_ids()) == 15


def test_five_listeners_that_emit_their_own_event_stop_at_the_chain_budget(
    mem: tuple[Stores, queue.MemoryRunQueues], chain_max: int
) -> None:
    """The issue's case: 5 emit steps listening to their own event made 5^10 runs (depth 10);
    now the chain's runs past the root's fan-out stop at the budget and the emits past it fail."""
    stores, queues = mem
    a = agent(stores)
    emits = {"steps": [{"id": "again", "type": "emit", "name": "loop.x", "data": {}}]}
    for _ in range(5):
        listener(a, "loop.*", payload=emits)
    events.post_event(a, {"name": "loop.go"}, NOW)
    outcomes: list[str] = []
    worked = 0
    while worked < 200:  # 5^10 without the bound: this loop would not drain
        pending = [s.message for band in queues.sent.values() for s, _ in band]
        if worked == len(pending):
            break
        for m in pending[worked:]:
            outcomes.append(worker.process(m.to_json(), "queue", "receipt", NOW))
        worked = len(pending)
    assert worked == 5 + chain_max - chain_max % 5  # the root's 5, then fan-outs of 5 while they fit: 10
    failed = [
        r
        for r in stores.runs.items.values()
        if r.status is RunStatus.FAILED  # type: ignore[attr-defined]
    ]
    assert {(r.doc["error"] or {}).get("type") for r in failed} == {"chain_too_broad"}
    assert all(r.attempt == 1 for r in failed)  # not retried
    assert outcomes.count("succeeded") == worked - len(failed)
