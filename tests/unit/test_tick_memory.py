"""The tick's logic on the in-memory stores and run queues (no moto): starts and due-table
entries, stale entries, the watermark, a queue that refuses, busy shards, racing ticks, the
shard budget, dispatch-on-write, and planning itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import dispatch, store
from chalicelib.dispatch import plan as planning
from chalicelib.dispatch import queue, tick
from chalicelib.domain.records import Definition, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.domain.timefmt import epoch
from chalicelib.platform.config import settings
from chalicelib.store.ports import DueEntry, DueFire, slot_of
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
T = epoch(NOW)


class World:
    def __init__(self) -> None:
        self.stores = store.in_memory()
        self.queues = queue.MemoryRunQueues()
        self.t = NOW.timestamp()

    def seed(self, t: Task) -> Task:
        self.stores.tasks.put(t)  # type: ignore[attr-defined]
        return t

    def task(self, task_id: str) -> Task:
        found = self.stores.tasks.get(task_id)
        assert found is not None
        return found

    def entries(self, task_id: str) -> list[DueEntry]:
        shard = planning.shard_for(task_id)
        return [e for e in self.stores.due.read(shard, T + 10**6) if e.task_id == task_id]

    def sent(self) -> list[tuple[str, int, int]]:
        """(task id, fire, delay) of every message sent, in order."""
        return [(s.message.task_id, s.message.scheduled_for, d) for band in self.queues.sent.values() for s, d in band]


@pytest.fixture()
def w() -> Iterator[World]:
    world = World()
    with installed(world.stores, world.queues, lambda: world.t):
        yield world


def a_task(task_id: str, expr: str = "*/5 * * * *", *, due_at: int | None = None, **over: Any) -> Task:
    kind = over.pop("kind", ScheduleKind.CRON)
    return Task(
        task_id=task_id,
        created_by="agent-1",
        created_at="2027-03-01T00:00:00Z",
        updated_at="2027-03-01T00:00:00Z",
        status=over.pop("status", TaskStatus.ACTIVE),
        schedule=Schedule(kind, expr, "UTC", anchor="2027-03-01T00:00:00Z", **over.pop("schedule", {})),
        definition=Definition("t", "", {"steps": []}, priority=5, max_retries=2, backoff_strategy="exponential"),
        schedule_version=over.pop("schedule_version", 1),
        due_shard=planning.shard_for(task_id) if due_at is not None else None,
        due_at=due_at,
        **over,
    )


def test_a_started_schedule_is_sent_ahead_and_moves_to_the_due_table(w: World) -> None:
    # GIVEN a schedule started by the API, first fire in 5 minutes... and one at 12:01
    w.seed(a_task("every-5", due_at=T + 300))
    w.seed(a_task("every-1", "* * * * *", due_at=T + 60))
    # WHEN the tick runs at 12:00 (look-ahead 90 s)
    report = dispatch.run_tick(NOW)
    # THEN only the fire inside the look-ahead goes, delayed to its instant
    assert report.dispatched == 1 and report.tasks == 1 and report.shards == settings().due_shards
    assert w.sent() == [("every-1", T + 60, 60)]
    # AND its next fire is its entry in the due table; the start left the index
    assert [(e.fire, e.schedule_version) for e in w.entries("every-1")] == [(T + 120, 1)]
    assert w.task("every-1").due_at is None and w.task("every-1").status is TaskStatus.ACTIVE
    assert w.task("every-5").due_at == T + 300  # not yet


def test_running_schedules_are_dispatched_from_the_due_table_once(w: World) -> None:
    # GIVEN a running schedule whose next fire (12:01) is in the due table
    t = w.seed(a_task("t", "* * * * *"))
    w.stores.due.add(DueEntry(planning.shard_for("t"), t.task_id, T + 60, 1))
    # WHEN two ticks run at 12:00
    first = dispatch.run_tick(NOW)
    second = dispatch.run_tick(NOW)
    # THEN the fire goes once (the watermark), and the next entry is written
    assert (first.dispatched, second.dispatched) == (1, 0)
    assert [f for _, f, _ in w.sent()] == [T + 60]
    assert [e.fire for e in w.entries("t")] == [T + 60, T + 120]
    assert w.stores.shards.watermark(planning.shard_for("t")) == slot_of(T + 90, "~")
    # AND the next minute's tick sends 12:02 and writes 12:03
    w.t += 60
    assert dispatch.run_tick(NOW + timedelta(minutes=1)).dispatched == 1
    assert [f for _, f, _ in w.sent()] == [T + 60, T + 120]
    assert [e.fire for e in w.entries("t")][-1] == T + 180


def test_a_fire_closer_than_the_look_ahead_sends_the_following_ones_too(w: World) -> None:
    w.seed(a_task("t", "* * * * *", due_at=T + 10))
    # the start's first fire as stored, then the schedule's own fires up to the horizon
    assert dispatch.run_tick(NOW).dispatched == 2
    assert [f for _, f, _ in w.sent()] == [T + 10, T + 60]
    assert [e.fire for e in w.entries("t")] == [T + 120]


@pytest.mark.parametrize(
    "change",
    [
        {"status": TaskStatus.PAUSED},
        {"status": TaskStatus.CANCELED},
        {"schedule_version": 2},
        {"snoozed_until": "2027-03-01T12:05:00Z"},
    ],
    ids=["paused", "canceled", "changed", "snoozed"],
)
def test_entries_of_paused_canceled_changed_or_snoozed_schedules_are_dropped(w: World, change: dict[str, Any]) -> None:
    w.seed(a_task("t", "* * * * *", **change))
    w.stores.due.add(DueEntry(planning.shard_for("t"), "t", T + 60, 1))
    report = dispatch.run_tick(NOW)
    assert (report.dispatched, report.stale, w.sent()) == (0, 1, [])
    assert [e.fire for e in w.entries("t")] == [T + 60]  # nothing written after it
    # the watermark passes it: the next tick does not read it again
    assert w.stores.shards.watermark(planning.shard_for("t")) == slot_of(T + 90, "~")


def test_an_entry_of_a_deleted_task_is_dropped(w: World) -> None:
    w.stores.due.add(DueEntry("0", "gone", T + 60, 1))
    assert dispatch.run_tick(NOW).stale == 1 and w.sent() == []


def test_a_refused_message_leaves_its_entry_and_those_after_it_to_the_next_tick(w: World) -> None:
    # GIVEN three running schedules in one shard, and a queue that refuses the middle one's fire
    ids = [i for i in (f"t{n}" for n in range(40)) if planning.shard_for(i) == "0"][:3]
    for n, i in enumerate(ids):
        w.seed(a_task(i, "* * * * *"))
        w.stores.due.add(DueEntry("0", i, T + 60 + n, 1))  # a fire that is not on the cron: fine for an entry
    refused = planning.message(DueFire(ids[1], "agent-1", a_task(ids[1]).schedule, 1, 5, T + 61), T + 61).run_id
    w.queues.refuse.add(refused)
    # WHEN the tick runs
    report = dispatch.run_tick(NOW)
    # THEN the others went; the watermark stops before the refused entry
    assert report.dispatched == 2
    assert w.stores.shards.watermark("0") == slot_of(T + 60, ids[0])
    # AND once the queue takes it, the next tick sends it (and re-sends the third: same run id)
    w.queues.refuse.clear()
    again = dispatch.run_tick(NOW)
    assert [(t, f) for t, f, _ in w.sent()][-2:] == [(ids[1], T + 61), (ids[2], T + 62)]
    assert again.dispatched == 2
    assert w.stores.shards.watermark("0") == slot_of(T + 90, "~")


def test_a_shard_another_tick_holds_is_left_alone(w: World) -> None:
    w.seed(a_task("t", "* * * * *", due_at=T + 60))
    shard = planning.shard_for("t")
    w.stores.shards.acquire_shard(shard, "other-tick", T, tick.SHARD_LEASE_SECONDS)
    report = dispatch.run_tick(NOW)
    assert (report.shards_busy, report.dispatched, w.sent()) == (1, 0, [])
    assert w.stores.shards.acquire_shard(shard, "third", T + 1, 55).__class__.__name__ == "HeldElsewhere"


def test_racing_ticks_send_each_fire_once(w: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for n in range(60):
        w.seed(a_task(f"t{n}", "* * * * *", due_at=T + 30))
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: dispatch.run_tick(NOW), range(4)))
    assert sum(r.dispatched for r in reports) == 120  # 12:00:30 and 12:01:00 for each
    assert len(w.queues.run_ids()) == len(set(w.queues.run_ids())) == 120


def test_a_shard_out_of_time_keeps_the_rest_for_the_next_tick(w: World) -> None:
    # GIVEN 120 running schedules in shard 0 (three pages), and a clock that runs out after the first
    ids = [i for i in (f"t{n}" for n in range(2000)) if planning.shard_for(i) == "0"][:120]
    for i in ids:
        w.seed(a_task(i, "* * * * *"))
        w.stores.due.add(DueEntry("0", i, T + 60, 1))
    elapsed = iter([0.0, 0.0] + [tick.SHARD_BUDGET_SECONDS + 1] * 10_000)  # start; after the starts; pages
    # WHEN the shard is ticked with that clock
    report = tick.tick_shard("0", "h", NOW, tick.horizon_of(NOW), clock=lambda: next(elapsed))
    # THEN one page went, and the watermark says so
    assert report.dispatched == tick.PAGE
    done = sorted(slot_of(T + 60, i) for i in ids)
    assert w.stores.shards.watermark("0") == done[tick.PAGE - 1]
    # AND the next tick sends the rest
    assert dispatch.run_tick(NOW).dispatched == 120 - tick.PAGE
    assert len(set(w.queues.run_ids())) == 120


def test_dispatch_on_write_sends_a_near_first_fire_now(w: World) -> None:
    t = w.seed(a_task("t", "* * * * *", due_at=T + 60))
    assert dispatch.dispatch_if_soon(t, NOW) == 2  # 12:01 and 12:02: the look-ahead plus a margin
    assert [f for _, f, _ in w.sent()] == [T + 60, T + 120]
    assert [e.fire for e in w.entries("t")] == [T + 180]
    assert w.task("t").due_at is None  # the start was taken out of the index
    # a tick afterwards sends nothing again
    assert dispatch.run_tick(NOW).dispatched == 0


def test_dispatch_on_write_leaves_a_far_fire_to_the_tick(w: World) -> None:
    t = w.seed(a_task("t", "0 * * * *", due_at=T + 3600))
    assert dispatch.dispatch_if_soon(t, NOW) == 0 and w.sent() == []
    assert w.task("t").due_at == T + 3600


def test_a_slow_dispatch_on_write_leaves_the_start_in_the_index(w: World) -> None:
    t = w.seed(a_task("t", "* * * * *", due_at=T + 60))
    w.t += planning.WRITE_MARGIN_SECONDS  # the call took that long: a tick may have passed its entry
    assert dispatch.dispatch_if_soon(t, NOW) == 2
    assert w.task("t").due_at == T + 60


def test_schedule_next_points_a_record_at_its_fire_or_completes_it() -> None:
    t = a_task("t")
    nxt = dispatch.schedule_next(t.evolve(schedule_error="old"), NOW)
    assert (nxt.due_at, nxt.due_shard, nxt.schedule_error) == (T, planning.shard_for("t"), None)
    done = dispatch.schedule_next(t.evolve(due_at=T, due_shard="1"), None)
    assert (done.status, done.due_at, done.due_shard) == (TaskStatus.COMPLETED, None, None)
    event = dispatch.schedule_next(a_task("e", "", kind=ScheduleKind.EVENT), None)
    assert event.status is TaskStatus.ACTIVE


def test_plan_skips_missed_fires_by_policy_and_sends_the_rest() -> None:
    # GIVEN a start at 11:00 of an every-minute schedule that skips missed fires, planned at 12:00
    s = a_task("t", "* * * * *", schedule={"misfire_policy": "skip"}).schedule
    due = DueFire("t", "agent-1", s, 1, 5, T - 3600)
    p = planning.plan(due, NOW, tick.horizon_of(NOW))
    # THEN the missed fires are recorded skipped, and those from now on go out
    assert [m.scheduled_for for m in p.missed][:2] == [T - 3600, T - 3540]
    assert all(m.scheduled_for < T for m in p.missed)
    assert [s.message.scheduled_for for s in p.sends][0] >= T - settings().lookahead_seconds
    assert p.next_due is not None and p.next_due > epoch(tick.horizon_of(NOW))


def test_pending_fire_and_possibly_sent_on_records() -> None:
    t = a_task("t", "*/10 * * * *")
    assert dispatch.pending_fire(t, NOW) == T + 600
    assert dispatch.pending_fire(t.evolve(due_at=T + 5), NOW) == T + 5
    assert dispatch.pending_fire(t.evolve(status=TaskStatus.PAUSED), NOW) is None
    # a snooze of the 12:01 fire to 12:30: what a tick or a write may have sent reaches 12:02:30
    every = a_task("m", "* * * * *")
    assert planning.reach(NOW) == T + 150
    assert dispatch.possibly_sent(every, T + 60, T + 1800, NOW) == [T + 60, T + 120]
    assert dispatch.possibly_sent(every, T + 60, T + 100, NOW) == [T + 60]
    assert dispatch.possibly_sent(every, T + 151, T + 1800, NOW) == []


def test_a_schedule_that_no_longer_computes_pauses_its_task_with_a_failed_run(w: World) -> None:
    # GIVEN a running schedule whose stored expression no longer parses, and a good one
    bad = w.seed(a_task("bad", "not a cron"))
    w.stores.due.add(DueEntry(planning.shard_for("bad"), "bad", T + 60, 1))
    w.seed(a_task("good", "* * * * *", due_at=T + 60))
    # WHEN the tick runs
    report = dispatch.run_tick(NOW)
    # THEN the good one goes out, the bad one is reported, paused with why, and its fire failed
    assert report.dispatched == 1 and len(report.errors) == 1 and report.errors[0].startswith("bad: ")
    paused = w.task("bad")
    assert (
        paused.status is TaskStatus.PAUSED
        and paused.schedule_error
        and "2027-03-01T12:00:00Z: " in paused.schedule_error
    )
    run = w.stores.runs.get(
        "bad", planning.message(planning.entry_fire(DueEntry("0", "bad", T + 60, 1), bad), T + 60).run_id
    )
    assert run is not None and run.status.value == "failed"
    assert run.doc["error"]["type"] == "schedule_error"
    # AND a later tick leaves it alone (no repeat of the error)
    assert dispatch.run_tick(NOW + timedelta(minutes=1)).errors == []


def test_missed_fires_are_recorded_skipped_by_the_misfire_policy(w: World) -> None:
    # GIVEN a start an hour ago of an every-10-minutes schedule that skips what it missed
    w.seed(a_task("t", "*/10 * * * *", due_at=T - 3600, schedule={"misfire_policy": "skip"}))
    # WHEN the tick runs
    report = dispatch.run_tick(NOW)
    # THEN the fires before now (beyond the look-ahead's grace) are skipped runs, the rest go
    skipped = [f for f in range(T - 3600, T, 600) if f < T - settings().lookahead_seconds]
    assert report.skipped == len(skipped) > 0
    for f in skipped:
        run = w.stores.runs.get("t", planning.message(DueFire("t", "agent-1", a_task("t").schedule, 1, 5, f), f).run_id)
        assert run is not None and run.doc["skip_reason"] == "missed"
    assert [f for _, f, _ in w.sent()] == [T]  # 12:00, within the grace; 12:10 is past the horizon


def test_a_schedule_change_runs_an_instant_both_versions_fire_at_once(w: World) -> None:
    # GIVEN version 1 fires every minute, its 12:01 fire already sent; version 2 fires every 2 minutes
    old = w.seed(a_task("t", "* * * * *"))
    new = w.seed(a_task("t", "*/2 * * * *", schedule_version=2, due_at=T + 120))
    # WHEN the change is fenced at 12:00
    dispatch.fence_change(old, new, NOW)
    # THEN version 1's runs of the instants both share, near now, are recorded superseded first
    shared = [f for f in (T, T + 120) if f <= planning.reach(NOW)]
    for f in shared:
        run = w.stores.runs.get("t", planning.message(DueFire("t", "agent-1", old.schedule, 1, 5, f), f).run_id)
        assert run is not None and run.doc["skip_reason"] == "superseded"
    assert w.task("t").status is TaskStatus.ACTIVE
