"""The tick: second-precision delivery, dispatch-on-write, crash safety, concurrency,
cost that follows due work, priorities and missed fires."""

from __future__ import annotations

import threading
from collections import Counter

import boto3
import pytest

from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.store.models import DueModel, TaskModel
from chalicelib.store.ports import slot_of
from tests.integration.conftest import _empty_queues, task_body
from tests.integration.harness import Crash, RequestCounter, all_messages, crash_on, run_records, tick


def _create(api, agent, **over):
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], **{"timezone": "UTC", **over}), token=agent["token"])
    assert r.status_code == 201, r.body
    return r.data


def test_fire_is_dispatched_ahead_and_starts_on_the_second(api, clock, workers):
    # GIVEN a task firing every 5 minutes, created at 12:00:00
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/5 * * * *")
    assert t["next_run_at"] == "2027-03-01T12:05:00Z"
    assert all_messages() == []  # 12:05 is beyond this tick's look-ahead: nothing sent yet
    # WHEN the tick runs at 12:04:00
    clock.advance(240)
    assert tick(clock).dispatched == 1
    # THEN the message is invisible until 12:05:00 and then runs
    clock.advance(59)
    assert workers.poll_once() == 0
    clock.advance(1)
    assert workers.poll_once() == 1
    [run] = run_records(t["id"])
    assert run["status"] == "succeeded" and run["scheduled_for"] == "2027-03-01T12:05:00Z"
    assert run["started_at"] == "2027-03-01T12:05:00Z" and run["attempt"] == 1
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["run_count"] == 1 and got["last_run_status"] == "succeeded"
    assert got["next_run_at"] == "2027-03-01T12:10:00Z"


def test_dispatch_on_write_for_a_fire_before_the_next_tick(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    [msg] = all_messages()
    assert msg["task_id"] == t["id"] and msg["scheduled_for"] == int(clock.t) + 30
    clock.advance(30)
    assert workers.poll_once() == 1
    [run] = run_records(t["id"])
    assert run["status"] == "succeeded"
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["status"] == "completed"
    # a repeated tick finds nothing more to do
    clock.advance(60)
    assert tick(clock).dispatched == 0


def test_every_minute_schedule_dispatches_all_fires_inside_the_look_ahead(api, clock):
    agent = api.agent()
    t0 = int(clock.t)  # 12:00:00
    t = _create(api, agent, schedule_expr="* * * * *")  # 12:01 goes out on write (look-ahead 90 s)
    clock.advance(31)
    tick(clock)  # horizon 12:02:01: 12:02 goes out, 12:01 is not sent again
    fires = sorted(m["scheduled_for"] for m in all_messages() if m["task_id"] == t["id"])
    assert fires == [t0 + 60, t0 + 120]


def _due_tasks(api, agent, n):
    return [_create(api, agent, title=f"t{i}", schedule_expr="*/10 * * * *")["id"] for i in range(n)]


@pytest.mark.parametrize(
    ("event", "nth"),
    [
        ("before-call.sqs.SendMessageBatch", 0),  # before send
        ("after-call.sqs.SendMessageBatch", 0),  # after send, before advance
        ("before-call.sqs.SendMessageBatch", 1),  # mid batch: the second batch
        ("before-call.dynamodb.UpdateItem", 0),  # before the first advance
        ("before-call.dynamodb.UpdateItem", 5),  # between advances
        ("before-call.dynamodb.Query", 0),  # before reading due work
    ],
)
def test_no_lost_fire_and_one_run_per_fire_whatever_step_crashes(api, clock, workers, event, nth):
    agent = api.agent()
    ids = _due_tasks(api, agent, 25)
    clock.advance(9 * 60 + 30)  # 12:09:30, the 12:10 fires are due within the look-ahead
    from chalicelib.store.models import TaskModel

    target = wiring.client("sqs") if ".sqs." in event else TaskModel._get_connection().connection.client
    undo = crash_on(target, event, after_calls=nth)
    with pytest.raises(Crash):
        tick(clock)
    undo()
    clock.advance(60)  # the next tick, after the crashed tick's shard lease expired
    tick(clock)
    per_run = Counter(m["run_id"] for m in all_messages())
    fired = {m["task_id"] for m in all_messages()}
    assert fired == set(ids)  # no lost fire
    assert len(per_run) == 25  # one run id per fire
    assert max(per_run.values()) <= 2 and sum(per_run.values()) <= 25 + 10  # a re-send is at most one batch
    if event.startswith("before-call.sqs") or event.endswith("Query"):
        assert set(per_run.values()) == {1}
    workers.drain()
    records = run_records()
    assert len(records) == 25 and all(r["status"] == "succeeded" and r["attempt"] == 1 for r in records)


def test_two_concurrent_ticks_dispatch_each_fire_once(api, clock):
    agent = api.agent()
    ids = _due_tasks(api, agent, 30)
    clock.advance(9 * 60 + 30)
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        tick(clock)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    per_run = Counter(m["run_id"] for m in all_messages())
    assert len(per_run) == 30 and set(per_run.values()) == {1}
    assert {m["task_id"] for m in all_messages()} == set(ids)


def _bulk_tasks(n: int, due_at: int, start: int = 0, *, running: bool = False) -> None:
    """n hourly tasks stored directly: starting at `due_at`, or running with their next fire there."""
    from bench.common import store_hourly_tasks

    store_hourly_tasks(
        boto3.client("dynamodb"),
        settings().prefix,
        "11111111-1111-4111-8111-111111111111",
        "2027-03-01T00:00:00Z",
        start,
        n,
        due_at,
        running=running,
    )


def test_tick_cost_follows_due_work_not_stored_work(clock):
    clock.set(clock.now.replace(minute=59, second=30))
    due_at = int(clock.t) + 30
    _bulk_tasks(40, due_at, running=True)
    with RequestCounter() as small:
        assert tick(clock).dispatched == 40
    # GIVEN 40 due among 4,040 stored: the same 40 running schedules, now due at the next
    # hour, and 4,000 more whose fires lie beyond the window, half running, half starting
    _empty_queues()
    _bulk_tasks(2000, due_at + 7200, start=100, running=True)
    _bulk_tasks(2000, due_at + 7200, start=3000)
    clock.advance(3600)
    with RequestCounter() as big:
        assert tick(clock).dispatched == 40
    assert big.total <= small.total * 1.1, (small.calls, big.calls)
    # No Scan but the stuck-run sweep's one bounded page of the runs table (a fixed cost a tick).
    scans = big.params.get("dynamodb.Scan", [])
    assert [p["TableName"].removeprefix(settings().prefix) for p in scans] == ["runs"], scans
    assert scans[0]["Limit"] == settings().sweep_page_items and not scans[0].get("ConsistentRead")
    # one query of the task index and one of the due table per shard, whatever is stored
    assert 2 * settings().due_shards == big.calls["dynamodb.Query"]


def test_a_running_schedule_costs_one_small_write_a_fire(api, clock, workers):
    """The steady state: the tick writes the next fire's due-table entry and never the task
    (and charges the agent's run budget once a tick, whatever its number of fires)."""
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/10 * * * *")
    clock.advance(9 * 60 + 30)
    tick(clock)  # the start: 12:10 sent, 12:20 into the due table, the task leaves its index
    item = TaskModel.get(t["id"])
    assert item.due_at is None and item.due_shard is None
    [entry] = [e for e in DueModel.scan() if e.task_id == t["id"]]
    assert entry.fire == int(clock.t) + 30 + 600 and entry.slot == slot_of(entry.fire, t["id"])
    for minute in (20, 30):
        clock.set(clock.now.replace(minute=minute - 1, second=30))
        with RequestCounter() as calls:
            assert tick(clock).dispatched == 1
        writes = {op: n for op, n in calls.calls.items() if op in ("dynamodb.UpdateItem", "dynamodb.PutItem")}
        # one entry for the next fire; the rest are per-shard leases and watermarks, and the
        # stuck-run sweep's cursor
        shards = settings().due_shards
        budget = [p["TableName"].removeprefix(settings().prefix) for p in calls.params["dynamodb.UpdateItem"]]
        assert budget == ["agents"], budget  # the run budget's charge, one per agent and tick
        assert writes["dynamodb.PutItem"] == 1 + 2 * shards + 1, calls.calls  # + a lease and a watermark each
    fires = sorted(m["scheduled_for"] for m in all_messages() if m["task_id"] == t["id"])
    assert [f % 3600 // 60 for f in fires] == [10, 20, 30]
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["next_run_at"] == "2027-03-01T12:30:00Z"


def test_a_second_tick_in_the_same_minute_sends_nothing_again(api, clock):
    agent = api.agent()
    _due_tasks(api, agent, 3)
    clock.advance(9 * 60 + 30)
    assert tick(clock).dispatched == 3
    clock.set(clock.now.replace(minute=19, second=30))
    assert tick(clock).dispatched == 3  # from the due table
    clock.advance(5)
    assert tick(clock).dispatched == 0  # the watermark: those entries are done
    assert len(all_messages()) == 6 and len({m["run_id"] for m in all_messages()}) == 6


@pytest.mark.parametrize(
    ("event", "nth"),
    [
        ("before-call.sqs.SendMessageBatch", 0),
        ("after-call.sqs.SendMessageBatch", 0),  # sent, the next entries not written
        ("before-call.dynamodb.PutItem", 10),  # some next entries written, others not
        ("before-call.dynamodb.BatchGetItem", 0),  # before reading the tasks of the entries
    ],
)
def test_no_lost_fire_of_a_running_schedule_whatever_step_crashes(api, clock, workers, event, nth):
    agent = api.agent()
    ids = _due_tasks(api, agent, 25)
    clock.advance(9 * 60 + 30)
    tick(clock)  # 12:10 sent; the 12:20 fires wait in the due table
    _empty_queues()
    clock.set(clock.now.replace(minute=19, second=30))
    model = DueModel if event.endswith("PutItem") else TaskModel
    target = wiring.client("sqs") if ".sqs." in event else model._get_connection().connection.client
    undo = crash_on(target, event, after_calls=nth)
    try:
        with pytest.raises(Crash):
            tick(clock)
    finally:
        undo()
    clock.advance(60)  # the next tick, after the crashed tick's shard lease expired
    tick(clock)
    per_run = Counter(m["run_id"] for m in all_messages())
    assert {m["task_id"] for m in all_messages()} == set(ids)
    assert len(per_run) == 25 and max(per_run.values()) <= 2
    workers.drain()
    assert len(run_records()) == 25 and all(r["status"] == "succeeded" for r in run_records())
    # and the schedules carry on: every 12:30 fire is in the due table
    thirty = {e.task_id for e in DueModel.scan() if e.fire % 3600 == 30 * 60}
    assert thirty == set(ids)


def test_entries_of_a_paused_or_changed_schedule_are_dropped(api, clock):
    agent = api.agent()
    paused, changed, kept = (_create(api, agent, title=n, schedule_expr="*/10 * * * *") for n in "pck")
    clock.advance(9 * 60 + 30)
    assert tick(clock).dispatched == 3  # 12:10 for each; 12:20 entries written
    token = agent["token"]
    assert api.call("POST", f"/tasks/{paused['id']}/pause", token=token).status_code == 200
    r = api.call("PUT", f"/tasks/{changed['id']}", {"schedule_expr": "5-59/10 * * * *"}, token=token)
    assert r.status_code == 200 and r.data["next_run_at"] == "2027-03-01T12:15:00Z"
    _empty_queues()
    clock.set(clock.now.replace(minute=19, second=30))
    report = tick(clock)
    sent = sorted((m["task_id"], m["scheduled_for"] % 3600 // 60) for m in all_messages())
    # the changed task's 12:15 went out on its own tick (12:13:30 horizon covers it? no: here)
    assert (kept["id"], 20) in sent and all(tid != paused["id"] for tid, _ in sent)
    assert (changed["id"], 20) not in sent and (changed["id"], 15) in sent
    assert report.stale == 2
    # resuming starts afresh from now: the next fire after 12:19:30
    r = api.call("POST", f"/tasks/{paused['id']}/resume", token=token)
    assert r.data["next_run_at"] == "2027-03-01T12:20:00Z"
    assert any(m["task_id"] == paused["id"] and m["scheduled_for"] % 3600 == 20 * 60 for m in all_messages())


@pytest.mark.parametrize("change", ["pause_resume", "update"])
def test_a_tick_working_from_an_old_version_never_overwrites_the_new_versions_entry(api, clock, change):
    """A change that keeps the cadence lands while a tick, which read the old version, is about
    to write the next entry: both versions name the same slot, and the newer one must stay."""
    agent = api.agent()
    token = agent["token"]
    t = _create(api, agent, schedule_expr="*/10 * * * *")
    clock.advance(9 * 60 + 30)
    tick(clock)  # 12:10 sent under v1; the 12:20 entry is v1
    clock.set(clock.now.replace(minute=19, second=30))
    conn = DueModel._get_connection().connection.client
    raced: list[int] = []

    def change_first(**_: object) -> None:
        if raced:
            return  # the API's own entry write
        raced.append(1)  # the tick has read v1 and sent 12:20; its 12:30 entry comes next
        if change == "pause_resume":
            assert api.call("POST", f"/tasks/{t['id']}/pause", token=token).status_code == 200
            assert api.call("POST", f"/tasks/{t['id']}/resume", token=token).status_code == 200
        else:
            r = api.call("PUT", f"/tasks/{t['id']}", {"misfire_policy": "skip"}, token=token)
            assert r.status_code == 200

    conn.meta.events.register("before-call.dynamodb.PutItem", change_first)
    try:
        tick(clock)
    finally:
        conn.meta.events.unregister("before-call.dynamodb.PutItem", change_first)
    assert raced
    version = TaskModel.get(t["id"]).schedule_version
    [entry] = [e for e in DueModel.scan() if e.task_id == t["id"] and e.fire % 3600 == 30 * 60]
    assert entry.schedule_version == version > 1
    for minute in (29, 39):
        clock.set(clock.now.replace(minute=minute, second=30))
        tick(clock)
    minutes = {m["scheduled_for"] % 3600 // 60 for m in all_messages() if m["task_id"] == t["id"]}
    assert {30, 40} <= minutes


def test_a_schedule_change_made_as_a_fire_starts_does_not_run_that_instant_twice(api, clock, workers):
    from datetime import timedelta

    from chalicelib.services import tasks as tasks_mod
    from chalicelib.services.agents import Caller

    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/5 * * * *")
    clock.advance(4 * 60)
    tick(clock)  # 12:05 sent under v1
    clock.advance(60)
    workers.drain()  # 12:05 runs under v1 …
    # … while a PUT that began at 12:04:59.x (its `now` is whole seconds) keeps the 12:05 cadence
    tasks_mod.update_task(
        Caller(agent["agent_id"]), t["id"], {"misfire_policy": "skip"}, None, clock.now - timedelta(seconds=1)
    )
    workers.drain()
    recs = run_records(t["id"])
    assert [r["status"] for r in recs if r["scheduled_for"].endswith("12:05:00Z")].count("succeeded") == 1
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["run_count"] == 1 and got["next_run_at"] == "2027-03-01T12:10:00Z"


def test_a_change_before_the_fire_runs_it_once_under_the_new_version(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/5 * * * *")
    clock.advance(4 * 60)
    tick(clock)  # 12:05 sent under v1
    r = api.call("PUT", f"/tasks/{t['id']}", {"misfire_policy": "skip"}, token=agent["token"])
    assert r.status_code == 200
    clock.advance(60)
    workers.drain()
    at_five = [(r["status"], r["skip_reason"]) for r in run_records(t["id"])]
    assert sorted(at_five, key=str) == sorted([("succeeded", None), ("skipped", "superseded")], key=str)


def test_changing_a_once_task_that_just_ran_does_not_run_it_again(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    clock.advance(30)
    workers.drain()
    assert api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data["status"] == "completed"
    # the same instant, written in another zone: a schedule change within the 60 s look-back
    clock.advance(20)
    body = {"timezone": "Europe/Chisinau", "schedule_expr": "2027-03-01T14:00:30+02:00"}
    r = api.call("PUT", f"/tasks/{t['id']}", body, token=agent["token"])
    assert r.status_code == 200 and r.data["status"] == "completed" and r.data["next_run_at"] is None
    clock.advance(5)
    workers.drain()
    assert [x["status"] for x in run_records(t["id"])].count("succeeded") == 1


def test_a_slow_dispatch_on_write_leaves_the_start_to_the_tick(api, clock, workers):
    """If the API call stalls between sending and clearing the start, a tick may already have
    worked past the entry it wrote; so the start stays in the index and nothing is lost."""
    from chalicelib.store.models import DueModel as Due

    agent = api.agent()
    conn = Due._get_connection().connection.client

    def stall(**_: object) -> None:
        clock.advance(40)

    conn.meta.events.register("before-call.dynamodb.PutItem", stall)
    try:
        t = _create(api, agent, schedule_expr="* * * * *")
    finally:
        conn.meta.events.unregister("before-call.dynamodb.PutItem", stall)
    assert TaskModel.get(t["id"]).due_at is not None  # left for the tick
    tick(clock)
    assert TaskModel.get(t["id"]).due_at is None
    workers.drain()
    fires = sorted({m["scheduled_for"] for m in all_messages() if m["task_id"] == t["id"]})
    assert fires == sorted(set(fires)) and all(b - a == 60 for a, b in zip(fires, fires[1:], strict=False))
    assert {r["status"] for r in run_records(t["id"])} <= {"succeeded"}


def test_higher_priority_runs_start_first(api, clock, workers):
    agent = api.agent()
    for i in range(12):
        _create(api, agent, title=f"low{i}", priority=9, schedule_kind="once", schedule_expr="2027-03-01T12:00:20Z")
    _create(api, agent, title="urgent", priority=1, schedule_kind="once", schedule_expr="2027-03-01T12:00:20Z")
    clock.advance(20)
    workers.drain()
    first_band, _ = workers.outcomes[0]
    assert first_band == "high"
    assert [b for b, _ in workers.outcomes].count("low") == 12


@pytest.mark.parametrize(("policy", "ran", "skipped"), [("run_once", 1, 9), ("skip", 0, 10), ("run_all", 10, 0)])
def test_missed_fires_after_an_outage_follow_the_policy(api, clock, workers, policy, ran, skipped):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/5 * * * *", misfire_policy=policy)
    # the scheduler is down from 12:00 to 12:52: fires 12:05 … 12:50 (10) are missed
    clock.advance(52 * 60)
    tick(clock)
    clock.advance(1)
    workers.drain()
    recs = run_records(t["id"])
    missed = [r for r in recs if r["status"] == "skipped" and r["skip_reason"] == "missed"]
    done = [r for r in recs if r["status"] == "succeeded"]
    assert (len(done), len(missed)) == (ran, skipped)
    if policy == "run_once":
        assert done[0]["scheduled_for"] == "2027-03-01T12:50:00Z"
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["next_run_at"] == "2027-03-01T12:55:00Z"


def test_lookahead_never_exceeds_sqs_delay_limit(clock):
    from chalicelib.platform.config import settings

    assert settings().lookahead_seconds + 5 < 900
    assert settings().lookahead_seconds > settings().tick_seconds


def _break_schedule(task_id: str, sched: str = '{"schedule_kind": "cron", "schedule_expr": "garbage"}') -> None:
    boto3.client("dynamodb").update_item(
        TableName="test-tasks",
        Key={"task_id": {"S": task_id}},
        UpdateExpression="SET sched = :s",
        ExpressionAttributeValues={":s": {"S": sched}},
    )


@pytest.mark.parametrize("running", [False, True], ids=["start", "running"])
def test_a_schedule_the_tick_cannot_compute_pauses_its_task_visibly(api, clock, running):
    # GIVEN two tasks in one shard's tick; one's stored schedule no longer computes, either before
    # its first dispatch (the task's due index) or while running (a due-table entry)
    agent = api.agent()
    good = _create(api, agent, schedule_expr="*/10 * * * *")
    bad = _create(api, agent, schedule_expr="*/10 * * * *")
    if running:
        clock.advance(9 * 60 + 30)
        assert tick(clock).dispatched == 2  # 12:10 for both; their next entries are in the due table
    _break_schedule(bad["id"])
    # WHEN the tick reaches it
    clock.advance(10 * 60)
    report = tick(clock)
    # THEN the good task is dispatched as usual
    assert report.dispatched == 1 and len(report.errors) == 1 and "expected 5 fields" in report.errors[0]
    assert {m["task_id"] for m in all_messages()} == {good["id"]} | ({bad["id"]} if running else set())
    # AND the broken one is paused with a schedule_error saying when and why
    got = api.call("GET", f"/tasks/{bad['id']}", token=agent["token"]).data
    assert got["status"] == "paused" and got["next_run_at"] is None
    assert got["failure_count"] == 1 and got["last_run_status"] == "failed"
    assert got["schedule_error"].startswith(clock.now.strftime("%Y-%m-%dT%H:%M:%SZ") + ": ")
    assert "expected 5 fields" in got["schedule_error"]
    # AND its pending fire has a failed run record whose error names schedule_error
    failed = [r for r in run_records(bad["id"]) if r["status"] == "failed"]
    [record] = failed
    assert record["scheduled_for"] == ("2027-03-01T12:20:00Z" if running else "2027-03-01T12:10:00Z")
    assert record["error"]["type"] == "schedule_error" and "expected 5 fields" in record["error"]["message"]
    # AND a later tick neither retries it nor records it again
    clock.advance(10 * 60)
    assert tick(clock).errors == []
    assert len([r for r in run_records(bad["id"]) if r["status"] == "failed"]) == 1


def test_fixing_a_paused_schedule_and_resuming_clears_the_schedule_error(api, clock):
    agent = api.agent()
    bad = _create(api, agent, schedule_expr="*/10 * * * *")
    _break_schedule(bad["id"])
    clock.advance(9 * 60 + 30)
    tick(clock)
    # a resume with the schedule still broken is a 400 naming it, not a 500
    r = api.call("POST", f"/tasks/{bad['id']}/resume", token=agent["token"])
    assert r.status_code == 400 and r.data["errors"][0]["field"] == "schedule_expr"
    fixed = api.call("PUT", f"/tasks/{bad['id']}", {"schedule_expr": "*/15 * * * *"}, token=agent["token"])
    assert fixed.status_code == 200 and fixed.data["status"] == "paused"
    resumed = api.call("POST", f"/tasks/{bad['id']}/resume", token=agent["token"]).data
    assert resumed["status"] == "active" and resumed["schedule_error"] is None
    assert resumed["next_run_at"] == "2027-03-01T12:15:00Z"


def test_a_cron_task_completes_after_its_last_run_before_ends_at(api, clock, workers):
    # GIVEN a cron task every 5 minutes that ends at 12:12
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/5 * * * *", ends_at="2027-03-01T12:12:00Z")
    # WHEN its fires at 12:05 and 12:10 run
    for _ in range(3):
        clock.advance(300)
        tick(clock)
        workers.drain()
    # THEN both ran and the task is completed, as a once or rrule task would be
    assert sorted(r["scheduled_for"] for r in run_records(t["id"])) == ["2027-03-01T12:05:00Z", "2027-03-01T12:10:00Z"]
    got = api.call("GET", f"/tasks/{t['id']}", token=agent["token"]).data
    assert got["status"] == "completed" and got["next_run_at"] is None


def test_a_message_up_to_a_second_early_waits_for_its_instant(api, clock, workers):
    # GIVEN a fire at 12:00:30 dispatched at 11:59:59.6 (SQS rounds the delay down to 30 s)
    agent = api.agent()
    clock.advance(-0.4)
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    [msg] = all_messages()
    assert msg["scheduled_for"] == int(clock.t + 0.4) + 30
    # WHEN it becomes visible 0.4 s before its instant
    clock.advance(30.1)
    before = clock.t
    assert workers.poll_once() == 1
    # THEN the worker held it for the remaining fraction instead of starting early
    assert clock.t - before == pytest.approx(0.3, abs=0.01)
    [run] = run_records(t["id"])
    assert run["status"] == "succeeded" and 0 <= run["start_lag_ms"] < 50


def test_delay_is_computed_when_sent_and_rounds_down():
    from chalicelib.dispatch.plan import delay_for

    assert delay_for(1000, 969.6) == 30  # visible at 999.6: the worker waits the last 0.4 s
    assert delay_for(1000, 1000.5) == 0
    assert delay_for(10_000, 1000) == 900  # SQS's ceiling; the worker re-delays the rest
