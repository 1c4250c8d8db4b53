"""The dispatch ports' contract, on both adapters: the `due` table (DueStore), shard leases and
watermarks (ShardLeases), and the task-side verbs of the tick (DueTasks). DynamoDB runs on moto
with the tables of infra/; the in-memory adapter directly. Every conditional verb is tested on
its conflicting case, and threads race on the ones the tick relies on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.domain.records import Definition, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.store import Stores
from chalicelib.store.ports import Acquired, DueEntry, HeldElsewhere, slot_of

T0 = 1_800_000_000


class Adapter:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def seed(self, task: Task) -> None:
        """Store a task as it is (the tasks store's own verbs have the services' suite)."""
        from chalicelib.store.memory.tasks import MemoryTasks

        if isinstance(self.stores.tasks, MemoryTasks):
            self.stores.tasks.put(task)
            return
        from chalicelib.store.dynamo.mapping import task_to_item

        task_to_item(task, f"{task.created_at}#{task.task_id}").save()


@pytest.fixture()
def a(stores: Stores) -> Adapter:
    """Both adapters: `stores` (tests/store/conftest.py) is parametrized over them."""
    return Adapter(stores)


def task(task_id: str, *, due_at: int | None = None, shard: str | None = "3", **over: Any) -> Task:
    return Task(
        task_id=task_id,
        created_by="agent-1",
        created_at="2027-01-01T00:00:00Z",
        updated_at="2027-01-01T00:00:00Z",
        status=over.pop("status", TaskStatus.ACTIVE),
        schedule=Schedule(ScheduleKind.CRON, "*/5 * * * *", "Europe/Chisinau", anchor="2027-01-01T00:00:00Z"),
        definition=Definition(
            "t", "", {"steps": []}, priority=over.pop("priority", 5), max_retries=2, backoff_strategy="exponential"
        ),
        schedule_version=over.pop("schedule_version", 1),
        due_shard=shard if due_at is not None else None,
        due_at=due_at,
        **over,
    )


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads released together."""
    start = threading.Barrier(n)

    def go(i: int) -> Any:
        start.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


# ---- DueStore -------------------------------------------------------------------------------


def test_read_gives_a_shards_entries_in_fire_order_up_to_until_after_a_slot(a: Adapter) -> None:
    due = a.stores.due
    # GIVEN entries in two shards, added out of order, two at the same second
    for fire, tid in ((T0 + 60, "b"), (T0, "z"), (T0 + 60, "a"), (T0 + 120, "c"), (T0 + 121, "late")):
        assert due.add(DueEntry("1", tid, fire, 1))
    assert due.add(DueEntry("2", "other", T0, 1))
    # WHEN the shard is read up to T0+120
    got = list(due.read("1", T0 + 120))
    # THEN its entries up to that second (inclusive), by fire then task id, no other shard's
    assert [(e.task_id, e.fire) for e in got] == [("z", T0), ("a", T0 + 60), ("b", T0 + 60), ("c", T0 + 120)]
    assert all(e.shard == "1" and e.schedule_version == 1 for e in got)
    # AND after a slot: only what follows it (the slot itself excluded)
    assert [e.task_id for e in due.read("1", T0 + 121, after=slot_of(T0 + 60, "a"))] == ["b", "c", "late"]
    assert list(due.read("1", T0 + 120, after=slot_of(T0 + 120, "~"))) == []
    assert list(due.read("9", T0 + 999)) == []


def test_add_never_overwrites_a_newer_schedule_version(a: Adapter) -> None:
    due = a.stores.due
    # GIVEN version 3 holds a slot
    assert due.add(DueEntry("1", "t", T0, 3))
    # WHEN version 2 (a tick working from the old schedule) writes the same slot
    refused = due.add(DueEntry("1", "t", T0, 2))
    # THEN it is refused and version 3 stays; the same or a newer version writes (idempotent)
    assert refused is False
    assert [e.schedule_version for e in due.read("1", T0)] == [3]
    assert due.add(DueEntry("1", "t", T0, 3)) is True
    assert due.add(DueEntry("1", "t", T0, 4)) is True
    assert [e.schedule_version for e in due.read("1", T0)] == [4]


def test_racing_adds_of_one_slot_leave_the_newest_version(a: Adapter) -> None:
    due = a.stores.due
    results = race(8, lambda i: due.add(DueEntry("1", "t", T0, i + 1)))
    assert [e.schedule_version for e in due.read("1", T0)] == [8]
    assert results[7] is True  # the newest version is never refused


# ---- ShardLeases ----------------------------------------------------------------------------


def test_a_shard_lease_is_held_until_it_runs_out_or_is_released(a: Adapter) -> None:
    leases = a.stores.shards
    assert leases.acquire_shard("1", "tick-a", T0, 55) == Acquired(T0 + 55)
    # another tick cannot take it while it runs, up to its last second
    assert isinstance(leases.acquire_shard("1", "tick-b", T0 + 55, 55), HeldElsewhere)
    # another shard is free
    assert isinstance(leases.acquire_shard("2", "tick-b", T0, 55), Acquired)
    # a release by someone else changes nothing
    leases.release_shard("1", "tick-b")
    assert isinstance(leases.acquire_shard("1", "tick-b", T0 + 1, 55), HeldElsewhere)
    # once it ran out, anyone takes it
    assert leases.acquire_shard("1", "tick-b", T0 + 56, 55) == Acquired(T0 + 111)
    # its holder's release frees it at once
    leases.release_shard("1", "tick-b")
    assert isinstance(leases.acquire_shard("1", "tick-c", T0 + 57, 55), Acquired)


def test_a_lease_whose_answer_was_lost_is_still_its_holders(a: Adapter) -> None:
    # The lease's write landed, its answer was lost, and the SDK sent it again: the resend meets
    # the lease it wrote itself. Taken for another tick's, the shard would sit out its whole
    # lease unworked (the soak saw fires dispatched up to 55 s late).
    leases = a.stores.shards
    assert leases.acquire_shard("1", "tick-a", T0, 55) == Acquired(T0 + 55)
    assert leases.acquire_shard("1", "tick-a", T0, 55) == Acquired(T0 + 55)
    assert isinstance(leases.acquire_shard("1", "tick-b", T0, 55), HeldElsewhere)  # still no one else's
    leases.release_shard("1", "tick-a")
    assert leases.acquire_shard("1", "tick-b", T0 + 1, 55) == Acquired(T0 + 56)


def test_racing_ticks_take_a_shard_once(a: Adapter) -> None:
    got = race(8, lambda i: a.stores.shards.acquire_shard("1", f"tick-{i}", T0, 55))
    assert sum(isinstance(g, Acquired) for g in got) == 1
    assert sum(isinstance(g, HeldElsewhere) for g in got) == 7


def test_a_watermark_only_moves_forward(a: Adapter) -> None:
    leases = a.stores.shards
    assert leases.watermark("1") is None
    assert leases.advance_watermark("1", slot_of(T0, "b")) is True
    assert leases.advance_watermark("1", slot_of(T0, "a")) is False  # backward
    assert leases.advance_watermark("1", slot_of(T0, "b")) is False  # where it is
    assert leases.watermark("1") == slot_of(T0, "b")
    assert leases.advance_watermark("1", slot_of(T0 + 1, "a")) is True
    assert leases.watermark("1") == slot_of(T0 + 1, "a")
    assert leases.watermark("2") is None


def test_racing_watermarks_end_at_the_furthest(a: Adapter) -> None:
    leases = a.stores.shards
    race(8, lambda i: leases.advance_watermark("1", slot_of(T0 + i, "t")))
    assert leases.watermark("1") == slot_of(T0 + 7, "t")


# ---- DueTasks -------------------------------------------------------------------------------


def test_due_tasks_are_a_shards_starts_up_to_until_in_order(a: Adapter) -> None:
    # GIVEN started schedules in shard 3 and 4, and a running one (no start)
    a.seed(task("later", due_at=T0 + 30, priority=2))
    a.seed(task("first", due_at=T0))
    a.seed(task("beyond", due_at=T0 + 31))
    a.seed(task("elsewhere", due_at=T0, shard="4"))
    a.seed(task("running"))
    # WHEN shard 3 is read up to T0+30
    got = list(a.stores.due_tasks.due_tasks("3", T0 + 30))
    # THEN its starts by first fire, with what planning needs
    assert [d.task_id for d in got] == ["first", "later"]
    later = got[1]
    assert (later.due_at, later.priority, later.agent_id, later.schedule_version) == (T0 + 30, 2, "agent-1", 1)
    assert later.schedule == task("x").schedule


def test_advance_due_takes_the_start_out_only_if_unchanged(a: Adapter) -> None:
    verbs = a.stores.due_tasks
    a.seed(task("t", due_at=T0, schedule_version=2))
    assert verbs.advance_due("t", T0 + 1, 2) is False  # another start since
    assert verbs.advance_due("t", T0, 1) is False  # another schedule version since
    assert verbs.advance_due("gone", T0, 2) is False
    assert [d.task_id for d in verbs.due_tasks("3", T0)] == ["t"]
    # WHEN it is unchanged
    assert verbs.advance_due("t", T0, 2) is True
    # THEN it left the index, still active; a repeat finds nothing to take
    after = a.stores.tasks.get_many({"t"})["t"]
    assert (after.due_at, after.due_shard, after.status) == (None, None, TaskStatus.ACTIVE)
    assert list(verbs.due_tasks("3", T0)) == []
    assert verbs.advance_due("t", T0, 2) is False


def test_advance_due_can_complete(a: Adapter) -> None:
    a.seed(task("t", due_at=T0))
    assert a.stores.due_tasks.advance_due("t", T0, 1, complete=True) is True
    assert a.stores.tasks.get_many({"t"})["t"].status is TaskStatus.COMPLETED


def test_racing_advances_of_one_start_win_once(a: Adapter) -> None:
    a.seed(task("t", due_at=T0))
    got = race(8, lambda i: a.stores.due_tasks.advance_due("t", T0, 1))
    assert got.count(True) == 1


def test_pause_with_error_only_an_active_task_at_that_version(a: Adapter) -> None:
    verbs = a.stores.due_tasks
    a.seed(task("t", due_at=T0, schedule_version=2))
    a.seed(task("paused", status=TaskStatus.PAUSED))
    assert verbs.pause_with_error("t", 1, "old version") is False
    assert verbs.pause_with_error("paused", 1, "not active") is False
    assert verbs.pause_with_error("gone", 1, "no task") is False
    assert verbs.pause_with_error("t", 2, "2027-01-01T00:00:00Z: expected 5 fields") is True
    t = a.stores.tasks.get_many({"t"})["t"]
    assert t.status is TaskStatus.PAUSED and t.schedule_error == "2027-01-01T00:00:00Z: expected 5 fields"
    assert (t.due_at, t.due_shard) == (None, None)
    assert a.stores.tasks.get_many({"paused"})["paused"].schedule_error is None
    assert verbs.pause_with_error("t", 2, "again") is False  # no longer active


def test_complete_only_an_active_task_at_that_version(a: Adapter) -> None:
    verbs = a.stores.due_tasks
    a.seed(task("t", due_at=T0, schedule_version=2))
    a.seed(task("canceled", status=TaskStatus.CANCELED))
    assert verbs.complete("t", 1) is False
    assert verbs.complete("canceled", 1) is False
    assert verbs.complete("gone", 1) is False
    assert verbs.complete("t", 2) is True
    t = a.stores.tasks.get_many({"t"})["t"]
    assert (t.status, t.due_at, t.due_shard) == (TaskStatus.COMPLETED, None, None)
    assert a.stores.tasks.get_many({"canceled"})["canceled"].status is TaskStatus.CANCELED


def test_racing_completions_win_once(a: Adapter) -> None:
    a.seed(task("t"))
    got = race(8, lambda i: a.stores.due_tasks.complete("t", 1))
    assert got.count(True) == 1
