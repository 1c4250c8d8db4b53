"""The contract of the task, agent, event and idempotency-key stores, on both adapters: every
verb, its conflicting cases, and threads racing on the same conditional verb."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.records import (
    Agent,
    AgentStatus,
    Definition,
    Event,
    Schedule,
    ScheduleKind,
    Task,
    TaskStatus,
)
from chalicelib.store import Stores

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


def agent(name: str = "a", **over: Any) -> Agent:
    fields: dict[str, Any] = dict(
        agent_id=str(uuid.uuid4()),
        name=name,
        created_at="2027-03-01T12:00:00Z",
        status=AgentStatus.ACTIVE,
        token_hash="h" * 64,
        signing_secret="kms1:c2VhbGVk",
    )
    fields.update(over)
    return Agent(**fields)


def task(
    agent_id: str, *, at: int = 0, kind: ScheduleKind = ScheduleKind.CRON, expr: str | None = "0 * * * *", **over: Any
) -> Task:
    created = (NOW + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields: dict[str, Any] = dict(
        task_id=str(uuid.uuid4()),
        created_by=agent_id,
        created_at=created,
        updated_at=created,
        status=TaskStatus.ACTIVE,
        schedule=Schedule(kind=kind, expr=expr, timezone="Europe/Chisinau", anchor=created),
        definition=Definition.from_fields(
            {"title": "t", "payload": {"steps": [{"id": "s", "type": "log", "message": "hi"}]}}
        ),
        due_shard="3",
        due_at=1_803_000_000,
    )
    fields.update(over)
    return Task(**fields)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads released together; their results in order."""
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def go(i: int) -> None:
        start.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def seeded(stores: Stores, **over: Any) -> Agent:
    a = agent(**over)
    assert stores.agents.put_if_absent(a)
    return a


# ---- tasks ----------------------------------------------------------------------------------


def test_a_created_task_reads_back_as_it_was_written(stores: Stores) -> None:
    a = seeded(stores)
    t = task(a.agent_id, snoozed_until="2027-03-02T00:00:00Z", snooze_reason="why", schedule_error="e")
    assert stores.tasks.get(t.task_id) is None
    assert stores.tasks.create(t, quota=10)
    assert stores.tasks.get(t.task_id) == t
    assert stores.tasks.get_many([t.task_id, str(uuid.uuid4())]) == {t.task_id: t}
    assert stores.agents.get(a.agent_id).task_count == 1  # type: ignore[union-attr]


def test_create_counts_against_the_quota_and_refuses_at_it(stores: Stores) -> None:
    a = seeded(stores, task_count=1)
    first, second = task(a.agent_id), task(a.agent_id)
    assert stores.tasks.create(first, quota=2)
    assert not stores.tasks.create(second, quota=2)
    assert stores.tasks.get(second.task_id) is None
    assert stores.agents.get(a.agent_id).task_count == 2  # type: ignore[union-attr]


def test_create_refuses_a_revoked_or_unknown_agent(stores: Stores) -> None:
    revoked = seeded(stores, status=AgentStatus.REVOKED)
    t, orphan = task(revoked.agent_id), task(str(uuid.uuid4()))
    assert not stores.tasks.create(t, quota=10)
    assert not stores.tasks.create(orphan, quota=10)
    assert stores.tasks.get(t.task_id) is None and stores.tasks.get(orphan.task_id) is None


def test_create_never_overwrites_a_task(stores: Stores) -> None:
    a = seeded(stores)
    t = task(a.agent_id)
    assert stores.tasks.create(t, quota=10)
    with pytest.raises(Exception):  # noqa: B017 - a storage error of either adapter
        stores.tasks.create(t.evolve(status=TaskStatus.PAUSED), quota=10)
    assert stores.tasks.get(t.task_id) == t
    assert stores.agents.get(a.agent_id).task_count == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("stores", ["dynamodb"], indirect=True)
def test_a_create_whose_answer_was_lost_is_created_once(stores: Stores) -> None:
    # DynamoDB only (memory loses no answers): the task's PutItem lands, its answer is lost and
    # the SDK sends it again, as botocore does when a response never arrives.
    from chalicelib.store.models import TaskModel

    a = seeded(stores)
    t = task(a.agent_id)
    client = TaskModel._get_connection().connection.client
    lost: list[str] = []

    def lose_the_answer(response: Any = None, operation: Any = None, **_: Any) -> int | None:
        if response is not None and response[0].status_code == 200 and not lost:
            lost.append(operation.name)
            return 0  # retry at once: the request is sent again
        return None

    client.meta.events.register("needs-retry.dynamodb.PutItem", lose_the_answer)
    try:
        assert stores.tasks.create(t, quota=10)
    finally:
        client.meta.events.unregister("needs-retry.dynamodb.PutItem", lose_the_answer)
    assert lost == ["PutItem"]
    assert stores.tasks.get(t.task_id) == t
    assert stores.agents.get(a.agent_id).task_count == 1  # type: ignore[union-attr]


def test_the_quota_holds_at_its_edge_under_threads(stores: Stores) -> None:
    a = seeded(stores, task_count=7)
    tasks = [task(a.agent_id) for _ in range(8)]
    won = race(8, lambda i: stores.tasks.create(tasks[i], quota=10))
    assert sum(won) == 3
    assert stores.agents.get(a.agent_id).task_count == 10  # type: ignore[union-attr]
    assert len(stores.tasks.get_many(t.task_id for t in tasks)) == 3


def test_save_if_unchanged_writes_the_next_version(stores: Stores) -> None:
    a = seeded(stores)
    t = task(a.agent_id)
    stores.tasks.create(t, quota=10)
    new = t.evolve(status=TaskStatus.PAUSED, due_shard=None, due_at=None, schedule_version=2, snooze_reason=None)
    saved = stores.tasks.save_if_unchanged(t, new)
    assert saved == new.evolve(version=2)
    assert stores.tasks.get(t.task_id) == saved
    # the same read again: the task changed since
    assert stores.tasks.save_if_unchanged(t, new.evolve(updated_at="x")) is None
    assert stores.tasks.get(t.task_id) == saved


@pytest.mark.parametrize(
    "moved",
    [{"due_at": 1_803_000_060}, {"status": TaskStatus.COMPLETED}, {"schedule_version": 5}, {"due_at": None}],
)
def test_save_if_unchanged_loses_to_what_ticks_and_workers_write(stores: Stores, moved: dict[str, Any]) -> None:
    """A tick or worker changes due_at, status or schedule_version without bumping the version."""
    a = seeded(stores)
    t = task(a.agent_id)
    stores.tasks.create(t, quota=10)
    assert stores.tasks.save_if_unchanged(t, t.evolve(**moved)) is not None  # stands in for the tick's write
    # A read at the stored version that predates that one attribute's change:
    stale = t.evolve(version=2)
    assert stores.tasks.save_if_unchanged(stale, stale.evolve(updated_at="later")) is None
    assert stores.tasks.get(t.task_id) == t.evolve(version=2, **moved)


def test_save_if_unchanged_needs_the_task(stores: Stores) -> None:
    t = task(str(uuid.uuid4()))
    assert stores.tasks.save_if_unchanged(t, t) is None
    assert stores.tasks.get(t.task_id) is None


def test_two_saves_of_one_version_exactly_one_wins(stores: Stores) -> None:
    a = seeded(stores)
    t = task(a.agent_id)
    stores.tasks.create(t, quota=10)
    won = race(6, lambda i: stores.tasks.save_if_unchanged(t, t.evolve(updated_at=f"writer {i}")))
    winners = [w for w in won if w is not None]
    assert len(winners) == 1
    assert stores.tasks.get(t.task_id) == winners[0]


def test_list_by_agent_newest_first_filtered_and_paged(stores: Stores) -> None:
    a, b = seeded(stores), seeded(stores)
    mine = [task(a.agent_id, at=i) for i in range(5)]
    mine.append(task(a.agent_id, at=9, status=TaskStatus.PAUSED))
    mine.append(task(a.agent_id, at=10, kind=ScheduleKind.EVENT, expr="x.*", due_shard=None, due_at=None))
    theirs = task(b.agent_id, at=11)
    for t in [*mine, theirs]:
        assert stores.tasks.create(t, quota=100)
    newest_first = [t.task_id for t in reversed(mine)]
    page = stores.tasks.list_by_agent(a.agent_id, limit=3)
    assert [t.task_id for t in page.tasks] == newest_first[:3] and page.more
    page = stores.tasks.list_by_agent(a.agent_id, offset=3, limit=10)
    assert [t.task_id for t in page.tasks] == newest_first[3:] and not page.more
    paused = stores.tasks.list_by_agent(a.agent_id, status=TaskStatus.PAUSED)
    assert [t.task_id for t in paused.tasks] == [mine[5].task_id]
    events = stores.tasks.list_by_agent(a.agent_id, kind="event")
    assert [t.task_id for t in events.tasks] == [mine[6].task_id]
    everyone = stores.tasks.list_by_agent(None, limit=100)
    assert [t.task_id for t in everyone.tasks] == [theirs.task_id, *newest_first]


def test_tasks_created_in_one_second_keep_their_order(stores: Stores) -> None:
    a = seeded(stores)
    same = [task(a.agent_id) for _ in range(4)]
    for t in same:
        stores.tasks.create(t, quota=10)
    listed = stores.tasks.list_by_agent(a.agent_id).tasks
    assert [t.task_id for t in listed] == [t.task_id for t in reversed(same)]


def test_by_event_key_finds_the_tasks_of_those_keys_oldest_first(stores: Stores) -> None:
    a, b = seeded(stores), seeded(stores)
    ev: dict[str, Any] = {"kind": ScheduleKind.EVENT, "due_shard": None, "due_at": None}
    first = task(a.agent_id, at=0, expr="order.*", **ev)
    second = task(a.agent_id, at=5, expr="order.created", **ev)
    other_pattern = task(a.agent_id, at=6, expr="invoice.*", **ev)
    other_agent = task(b.agent_id, at=7, expr="order.*", **ev)
    no_pattern = task(a.agent_id, at=8, expr=None, **ev)
    for t in (second, first, other_pattern, other_agent, no_pattern):
        stores.tasks.create(t, quota=10)
    found = stores.tasks.by_event_key([f"{a.agent_id}#order.created", f"{a.agent_id}#order.*"])
    assert [t.task_id for t in found] == [first.task_id, second.task_id]
    assert stores.tasks.by_event_key([f"{a.agent_id}#nothing"]) == []


# ---- agents ---------------------------------------------------------------------------------


def test_agents_put_get_all_and_never_overwrite(stores: Stores) -> None:
    a = agent(egress_aws_targets=("arn:aws:sqs:*",), egress_http_allow=("example.test",))
    assert stores.agents.put_if_absent(a)
    assert not stores.agents.put_if_absent(agent(agent_id=a.agent_id, name="other"))
    assert stores.agents.get(a.agent_id) == a
    assert stores.agents.get(str(uuid.uuid4())) is None
    b = seeded(stores)
    assert sorted(x.agent_id for x in stores.agents.all()) == sorted([a.agent_id, b.agent_id])


def test_revoke_marks_the_agent_and_reports_an_unknown_one(stores: Stores) -> None:
    a = seeded(stores)
    revoked = stores.agents.revoke(a.agent_id)
    assert revoked is not None and revoked.status is AgentStatus.REVOKED and revoked.name == a.name
    assert stores.agents.get(a.agent_id) == revoked
    assert stores.agents.revoke(str(uuid.uuid4())) is None


def test_replace_secret_only_from_the_expected_one(stores: Stores) -> None:
    a = seeded(stores, signing_secret="whsec_plain")
    assert not stores.agents.replace_secret(a.agent_id, "whsec_other", "kms1:x")
    assert stores.agents.replace_secret(a.agent_id, "whsec_plain", "kms1:x")
    assert stores.agents.get(a.agent_id).signing_secret == "kms1:x"  # type: ignore[union-attr]
    assert not stores.agents.replace_secret(str(uuid.uuid4()), "whsec_plain", "kms1:x")
    won = race(4, lambda i: stores.agents.replace_secret(a.agent_id, "kms1:x", f"kms1:{i}"))
    assert sum(won) == 1


def test_set_egress_replaces_both_lists_of_an_existing_agent(stores: Stores) -> None:
    a = seeded(stores)
    assert stores.agents.get(a.agent_id).egress_aws_targets is None  # type: ignore[union-attr]
    assert stores.agents.set_egress(a.agent_id, ["arn:1", "arn:2"], ["h.test"])
    got = stores.agents.get(a.agent_id)
    assert got is not None and got.egress_aws_targets == ("arn:1", "arn:2") and got.egress_http_allow == ("h.test",)
    assert stores.agents.set_egress(a.agent_id, [], [])
    got = stores.agents.get(a.agent_id)
    assert got is not None and got.egress_aws_targets == () and got.egress_http_allow == ()
    missing = str(uuid.uuid4())
    assert not stores.agents.set_egress(missing, ["arn:1"], [])
    assert stores.agents.get(missing) is None


def test_release_task_slot_never_goes_below_zero(stores: Stores) -> None:
    a = seeded(stores, task_count=1)
    stores.agents.release_task_slot(a.agent_id)
    stores.agents.release_task_slot(a.agent_id)
    assert stores.agents.get(a.agent_id).task_count == 0  # type: ignore[union-attr]
    stores.agents.release_task_slot(str(uuid.uuid4()))  # no agent: nothing to release


def test_rate_buckets_restart_when_idle_and_advance_within_bounds(stores: Stores) -> None:
    a = seeded(stores)
    assert stores.agents.bucket(a.agent_id, "writes") is None
    assert stores.agents.restart_bucket(a.agent_id, "writes", 1_100, idle_before_ms=1_000)
    assert stores.agents.bucket(a.agent_id, "writes") == 1_100
    assert stores.agents.bucket(a.agent_id, "events") is None  # buckets are apart
    assert not stores.agents.restart_bucket(a.agent_id, "writes", 1_200, idle_before_ms=1_100)  # busy
    assert stores.agents.advance_bucket(a.agent_id, "writes", 100, low_ms=1_100, high_ms=1_500)
    assert stores.agents.bucket(a.agent_id, "writes") == 1_200
    assert not stores.agents.advance_bucket(a.agent_id, "writes", 100, low_ms=1_300, high_ms=1_500)
    assert not stores.agents.advance_bucket(a.agent_id, "writes", 100, low_ms=1_000, high_ms=1_199)
    assert stores.agents.restart_bucket(a.agent_id, "writes", 5_000, idle_before_ms=1_201)  # idle again
    assert stores.agents.bucket(a.agent_id, "writes") == 5_000
    missing = str(uuid.uuid4())
    assert not stores.agents.restart_bucket(missing, "writes", 1, idle_before_ms=2)
    assert not stores.agents.advance_bucket(missing, "writes", 1, low_ms=0, high_ms=2)
    assert stores.agents.bucket(missing, "writes") is None
    assert stores.agents.get(missing) is None


def test_rate_bucket_updates_are_exact_under_threads(stores: Stores) -> None:
    a = seeded(stores)
    restarted = race(6, lambda i: stores.agents.restart_bucket(a.agent_id, "events", 100, idle_before_ms=50))
    assert sum(restarted) == 1
    # an allowance of 5 steps above 100: exactly 5 of 8 concurrent advances fit
    advanced = race(8, lambda i: _advance_until_full(stores, a.agent_id))
    assert sum(advanced) == 5
    assert stores.agents.bucket(a.agent_id, "events") == 600


def _advance_until_full(stores: Stores, agent_id: str) -> bool:
    return stores.agents.advance_bucket(agent_id, "events", 100, low_ms=100, high_ms=500)


# ---- events ---------------------------------------------------------------------------------


def test_events_read_back_per_agent(stores: Stores) -> None:
    ev = Event(
        agent_id=str(uuid.uuid4()),
        event_id="1803000000-abcdef",
        name="order.created",
        data={"n": 1, "nested": {"x": [1, "2"]}},
        time="2027-03-01T12:00:00Z",
        runs=({"task_id": "t", "run_id": "r"},),
        depth=2,
        expires_at=NOW + timedelta(days=30),
    )
    stores.events.put(ev)
    assert stores.events.get(ev.agent_id, ev.event_id) == ev
    assert stores.events.get(str(uuid.uuid4()), ev.event_id) is None
    assert stores.events.get(ev.agent_id, "1803000000-other") is None


def test_a_chain_is_charged_only_within_its_limit_per_agent(stores: Stores) -> None:
    a, b, root = str(uuid.uuid4()), str(uuid.uuid4()), "1803000000-00000000000000aa"
    until = NOW + timedelta(days=30)
    assert stores.events.charge_chain(a, root, 5, limit=12, expires_at=until)
    assert stores.events.charge_chain(a, root, 7, limit=12, expires_at=until)  # exactly at the limit
    assert not stores.events.charge_chain(a, root, 1, limit=12, expires_at=until)  # past it: nothing added
    assert not stores.events.charge_chain(b, "1803000000-00000000000000bb", 13, limit=12, expires_at=until)
    assert stores.events.charge_chain(b, root, 12, limit=12, expires_at=until)  # per agent


def test_racing_charges_of_one_chain_never_pass_its_limit(stores: Stores) -> None:
    a, root = str(uuid.uuid4()), "1803000000-00000000000000cc"
    until = NOW + timedelta(days=30)
    charged = race(8, lambda i: stores.events.charge_chain(a, root, 3, limit=10, expires_at=until))
    assert sum(charged) == 3  # 9 of 10: a fourth charge of 3 would pass it


# ---- idempotency keys -----------------------------------------------------------------------


def test_a_key_is_claimed_once_until_it_expires(stores: Stores) -> None:
    later = NOW + timedelta(hours=24)
    assert stores.keys.claim("idem#a#k", {"task_id": "t1", "body_hash": "h"}, expires_at=later, now=NOW)
    assert not stores.keys.claim("idem#a#k", {"task_id": "t2"}, expires_at=later, now=NOW)
    held = stores.keys.get("idem#a#k", now=NOW)
    assert held is not None and held.value == {"task_id": "t1", "body_hash": "h"} and held.response is None
    after = later + timedelta(seconds=1)
    assert stores.keys.get("idem#a#k", now=after) is None  # expired (whatever TTL has deleted)
    assert stores.keys.claim("idem#a#k", {"task_id": "t3"}, expires_at=after + timedelta(hours=1), now=after)
    assert stores.keys.get("idem#a#k", now=after).value == {"task_id": "t3"}  # type: ignore[union-attr]
    assert stores.keys.get("idem#a#other", now=NOW) is None


def test_a_claim_keeps_its_first_response(stores: Stores) -> None:
    later = NOW + timedelta(hours=24)
    response = {"status": 201, "body": '{"id": "t1"}', "headers": {"ETag": '"1"'}}
    assert not stores.keys.keep_response("idem#a#k", response)  # no claim: nothing kept
    assert stores.keys.get("idem#a#k", now=NOW) is None
    stores.keys.claim("idem#a#k", {"task_id": "t1"}, expires_at=later, now=NOW)
    assert stores.keys.keep_response("idem#a#k", response)
    held = stores.keys.get("idem#a#k", now=NOW)
    assert held is not None and held.response == response and held.value == {"task_id": "t1"}


def test_a_released_key_can_be_claimed_again(stores: Stores) -> None:
    later = NOW + timedelta(hours=24)
    stores.keys.claim("awsevent#a#e", {}, expires_at=later, now=NOW)
    stores.keys.release("awsevent#a#e")
    assert stores.keys.get("awsevent#a#e", now=NOW) is None
    assert stores.keys.claim("awsevent#a#e", {}, expires_at=later, now=NOW)
    stores.keys.release("awsevent#a#never-claimed")  # nothing to release: no error


def test_two_claims_of_one_key_exactly_one_wins(stores: Stores) -> None:
    later = NOW + timedelta(hours=24)
    won = race(8, lambda i: stores.keys.claim("idem#a#race", {"task_id": f"t{i}"}, expires_at=later, now=NOW))
    assert sum(won) == 1
    held = stores.keys.get("idem#a#race", now=NOW)
    assert held is not None and held.value == {"task_id": f"t{won.index(True)}"}


# ---- the services over them -----------------------------------------------------------------


def test_two_creates_with_one_idempotency_key_make_one_task(stores: Stores) -> None:
    """The service's guarantee on either adapter: concurrent creates with one Idempotency-Key
    store one task and count it once; the others replay it or are told it is in progress."""
    from chalicelib import store
    from chalicelib.domain.errors import StateConflict
    from chalicelib.services import tasks
    from chalicelib.services.agents import Caller

    a = seeded(stores)
    body = {
        "title": "t",
        "description": "d",
        "schedule_kind": "cron",
        "schedule_expr": "0 3 * * *",
        "payload": {"steps": [{"id": "s", "type": "log", "message": "hi"}]},
        "created_by": a.agent_id,
    }

    def create(i: int) -> Any:
        try:
            return tasks.create_task(Caller(a.agent_id), body, "one-key", NOW)
        except StateConflict as e:
            return e

    store.use(stores)
    try:
        outcomes = race(6, create)
    finally:
        store.use(None)
    created = {o.task.task_id for o in outcomes if isinstance(o, tasks.Created) and o.task is not None}
    assert len(created) == 1, outcomes
    assert stores.agents.get(a.agent_id).task_count == 1  # type: ignore[union-attr]
    assert [t.task_id for t in stores.tasks.list_by_agent(a.agent_id).tasks] == list(created)
