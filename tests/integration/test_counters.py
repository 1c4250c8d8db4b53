"""A task's run counters live in one small stats item per task: every finished run adds itself
once (one conditional UpdateItem, idempotent by run id, made before the run's final save), and
a read never writes. These tests drive the real worker, tick and routes on moto and inject
concurrency, redeliveries, crashes and expiry."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bench.common import app_clients
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.store import counters
from chalicelib.store.counters import RECENT_KEEP, RECENT_MAX
from chalicelib.store.models import RunModel, StatsModel
from local import events as lambda_events
from tests.integration.conftest import task_body
from tests.integration.harness import Crash, RequestCounter, TableCalls, queue_url, run_records, tick
from tests.integration.test_worker import _http_payload, target  # noqa: F401 - the fixture

HOUR = 3600
DAY = 86_400
BLOCKED = {"steps": [{"id": "meta", "type": "http", "url": "http://169.254.169.254/latest"}]}  # fails at once
PLAIN = {"steps": [{"id": "say", "type": "log", "message": "hello"}]}  # no template reads the task
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
ROOT = Path(__file__).resolve().parents[2]


def _create(api, agent, **over):
    body = task_body(agent["agent_id"], **{"timezone": "UTC", "payload": PLAIN, **over})
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 201, r.body
    return r.data


def _run_now(api, agent, task_id):
    r = api.call("POST", f"/tasks/{task_id}/run_now", token=agent["token"])
    assert r.status_code == 202, r.body
    return r.data["run"]["id"]


def _get(api, agent, task_id):
    r = api.call("GET", f"/tasks/{task_id}", token=agent["token"])
    assert r.status_code == 200, r.body
    return r.data


def _counts(rep):
    return rep["run_count"], rep["failure_count"], rep["last_run_status"]


def _truth(task_id):
    """The counters as the run records say (while they all exist)."""
    finished = [r for r in run_records(task_id) if r["status"] in ("succeeded", "failed")]
    last = max(finished, key=lambda r: r["finished_at"], default=None)
    return len(finished), sum(r["status"] == "failed" for r in finished), last and last["status"]


@pytest.fixture()
def hooks() -> Iterator[Callable[[str, Callable[..., None]], None]]:
    """Register a botocore hook on every client the app uses; all are removed afterwards."""
    added: list[tuple[Any, str, Callable[..., None]]] = []

    def add(event: str, fn: Callable[..., None]) -> None:
        for c in app_clients():
            c.meta.events.register(event, fn)
            added.append((c, event, fn))

    yield add
    for c, event, fn in added:
        c.meta.events.unregister(event, fn)


def _is_final_run_save(params: dict[str, Any]) -> bool:
    values = json.dumps(params.get("ExpressionAttributeValues", {}))
    return params.get("TableName") == "test-runs" and '"succeeded"' in values and "lease_until" in json.dumps(params)


# ---- counting ---------------------------------------------------------------------------------


def test_a_finished_run_is_one_small_write_and_the_task_item_is_not_written(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_now(api, agent, t["id"])
    with TableCalls() as calls:
        assert workers.drain() == 1
    assert calls.writes("tasks") == 0 and calls.calls[("stats", "UpdateItem")] == 1, calls.calls
    assert calls.calls[("stats", "GetItem")] == 0  # its templates do not read the task
    [rec] = run_records(t["id"])
    got = _get(api, agent, t["id"])
    assert _counts(got) == (1, 0, "succeeded") and got["last_run_at"] == rec["finished_at"]
    assert StatsModel.get(t["id"]).recent == [counters.mark(rec["id"])]


def test_failures_are_counted_and_the_run_that_finished_last_is_shown(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload=BLOCKED)
    for _ in range(2):
        _run_now(api, agent, t["id"])
        clock.advance(1)
    workers.drain()
    assert _counts(_get(api, agent, t["id"])) == (2, 2, "failed") == _truth(t["id"])
    r = api.call("PUT", f"/tasks/{t['id']}", {"payload": PLAIN}, token=agent["token"])
    assert r.status_code == 200 and _counts(r.data) == (2, 2, "failed")  # a write's response shows them too
    clock.advance(5)
    _run_now(api, agent, t["id"])
    workers.drain()
    got = _get(api, agent, t["id"])
    assert _counts(got) == (3, 2, "succeeded") == _truth(t["id"]) and got["last_run_at"] == "2027-03-01T12:00:07Z"


def test_skipped_runs_are_never_counted(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, dedupe_key="k")
    _run_now(api, agent, t["id"])
    _run_now(api, agent, t["id"])
    workers.drain()  # one takes the dedupe window, the other is skipped
    assert sorted(r["status"] for r in run_records(t["id"])) == ["skipped", "succeeded"]
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")
    other = _create(api, agent)
    _run_now(api, agent, other["id"])
    api.call("POST", f"/tasks/{other['id']}/cancel", token=agent["token"])
    with TableCalls() as calls:
        workers.drain()
    assert [r["skip_reason"] for r in run_records(other["id"])] == ["task_canceled"]
    assert calls.writes("stats") == 0
    got = _get(api, agent, other["id"])
    assert _counts(got) == (0, 0, None) and got["last_run_at"] is None


def test_a_retried_run_counts_once_when_it_finishes(api, clock, workers, target):  # noqa: F811
    agent = api.agent()
    t = _create(api, agent, payload=_http_payload(target.url), max_retries=2, backoff_strategy="fixed")
    target.status = 500
    run = _run_now(api, agent, t["id"])
    with TableCalls() as calls:
        workers.drain()
    assert {r["id"]: r["status"] for r in run_records(t["id"])} == {run: "retrying"}
    assert calls.writes("stats") == 0 and _counts(_get(api, agent, t["id"])) == (0, 0, None)
    target.status = 200
    clock.advance(30)
    workers.drain()
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["attempt"] == 2
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")


def test_a_run_that_finished_last_wins_even_if_counted_first(api, clock, workers, target):  # noqa: F811
    agent = api.agent()
    t = _create(api, agent, payload=_http_payload(target.url), max_retries=2, backoff_strategy="fixed")
    target.status = 500
    middle = _run_now(api, agent, t["id"])  # fails once and waits 10 s for its retry
    workers.drain()
    clock.advance(1)
    target.status = 200
    last = _run_now(api, agent, t["id"])  # succeeds while the middle one is retrying
    workers.poll_once()
    assert {r["id"]: r["status"] for r in run_records(t["id"])} == {middle: "retrying", last: "succeeded"}
    clock.advance(30)
    workers.drain()
    recs = {r["id"]: r for r in run_records(t["id"])}
    got = _get(api, agent, t["id"])
    assert _counts(got) == (2, 0, "succeeded") and got["last_run_at"] == recs[middle]["finished_at"]
    # A count that arrives after a later-finished run's (two runs finishing together) does not
    # move the last run back, and is still counted.
    assert counters.count(t["id"], "0000000001-mlate", "failed", "2027-03-01T11:00:00Z")
    got = _get(api, agent, t["id"])
    assert _counts(got) == (3, 1, "succeeded") and got["last_run_at"] == recs[middle]["finished_at"]


# ---- concurrency, redelivery, crashes ----------------------------------------------------------


def test_parallel_finishes_are_each_counted_once(api, clock, workers):
    agent = api.agent()
    ok, bad = _create(api, agent), _create(api, agent, payload=BLOCKED)
    for i in range(30):
        _run_now(api, agent, ok["id"] if i % 3 else bad["id"])
    sqs, messages = boto3.client("sqs"), []
    while len(messages) < 30:
        messages += sqs.receive_message(
            QueueUrl=queue_url("normal"), MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        )["Messages"]
    # Three worker invocations at once, each running its batch of ten records on ten threads.
    import app

    arn = f"arn:aws:sqs:us-east-1:123456789012:{settings().queue_name('normal')}"
    batches = [lambda_events.sqs_event(messages[i : i + 10], arn, "us-east-1") for i in (0, 10, 20)]
    invocations = [threading.Thread(target=app.worker_normal, args=(b, None)) for b in batches]
    for th in invocations:
        th.start()
    for th in invocations:
        th.join()
    assert len([r for r in run_records() if r["status"] in ("succeeded", "failed")]) == 30
    assert _counts(_get(api, agent, ok["id"])) == (20, 0, "succeeded") == _truth(ok["id"])
    assert _counts(_get(api, agent, bad["id"])) == (10, 10, "failed") == _truth(bad["id"])


def _count_concurrently(task_id: str, calls: list[tuple[str, str, str]]) -> list[bool]:
    results: list[bool] = []
    lock = threading.Lock()

    def one(run_id: str, status: str, at: str) -> None:
        ok = counters.count(task_id, run_id, status, at)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one, args=c) for c in calls]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def test_copies_of_a_run_counting_at_once_count_it_once(env):
    # Three copies of each of RECENT_KEEP runs count at the same time (redeliveries racing the
    # first delivery, a retried request racing its first try).
    task_id = "00000000-0000-4000-8000-000000000001"
    ids = [f"{1796281376 + i:010d}-m{i:016x}" for i in range(RECENT_KEEP)]
    calls = [(rid, "failed" if i % 4 == 0 else "succeeded", f"2027-03-01T12:{i:02d}:00Z") for i, rid in enumerate(ids)]
    results = _count_concurrently(task_id, calls * 3)
    assert sorted(results) == [False] * 2 * RECENT_KEEP + [True] * RECENT_KEEP
    got = counters.read(task_id)
    assert (got.run_count, got.failure_count) == (RECENT_KEEP, RECENT_KEEP // 4)
    assert (got.last_run_at, got.last_run_status) == (calls[-1][2], calls[-1][1])


def test_a_trim_keeps_the_newest_marks(env):
    task_id = "00000000-0000-4000-8000-000000000003"
    ids = [f"{1796281376 + i:010d}-m{i:016x}" for i in range(RECENT_MAX + 1)]
    for rid in ids:
        assert counters.count(task_id, rid, "succeeded", "2027-03-01T12:00:00Z")
    assert StatsModel.get(task_id).recent == [counters.mark(r) for r in ids[-RECENT_KEEP:]]
    assert counters.count(task_id, ids[-RECENT_KEEP], "succeeded", "2027-03-01T12:00:00Z") is False
    assert counters.count(task_id, ids[0], "succeeded", "2027-03-01T12:00:00Z")  # the bound: forgotten
    assert counters.read(task_id).run_count == RECENT_MAX + 2


def test_trimming_under_concurrent_counts_loses_none_and_keeps_the_item_under_1_kb(env):
    task_id = "00000000-0000-4000-8000-000000000002"
    ids = [f"{1796281376 + i:010d}-e{i:016x}" for i in range(3 * RECENT_MAX)]
    results = _count_concurrently(task_id, [(rid, "succeeded", "2027-03-01T12:00:00Z") for rid in ids])
    assert results == [True] * len(ids) and counters.read(task_id).run_count == len(ids)
    # Racing trims may leave the burst's end over RECENT_MAX (a trim that loses leaves it to the
    # next count): the next count trims it.
    last = f"{1796281376 + len(ids):010d}-e{len(ids):016x}"
    assert counters.count(task_id, last, "succeeded", "2027-03-01T12:00:00Z")
    ids.append(last)
    item = boto3.client("dynamodb").get_item(TableName="test-stats", Key={"task_id": {"S": task_id}})["Item"]
    assert RECENT_KEEP <= len(item["recent"]["L"]) <= RECENT_MAX and _item_bytes(item) <= 1024, _item_bytes(item)
    # the marks kept (at least the RECENT_KEEP counted last) refuse a late copy of their runs
    kept = {m["S"] for m in item["recent"]["L"]}
    remembered = [rid for rid in ids if counters.mark(rid) in kept]
    assert len(remembered) == len(kept)
    for rid in remembered:
        assert counters.count(task_id, rid, "succeeded", "2027-03-01T13:00:00Z") is False
    assert counters.read(task_id).run_count == len(ids)
    # at its fullest (RECENT_MAX marks, the longest timestamps and status), still under 1 KB
    full = {**item, "recent": {"L": [{"S": counters.mark(r)} for r in ids[:RECENT_MAX]]}}
    full.update(last_run_status={"S": "succeeded"}, run_count={"N": "9" * 12}, failure_count={"N": "9" * 12})
    assert _item_bytes(full) <= 1024, _item_bytes(full)


def _item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings by length, numbers ~1 byte per
    two digits + 1, lists 3 bytes + 1 per element)."""

    def size(v: dict[str, Any]) -> int:
        if "S" in v:
            return len(v["S"].encode())
        if "N" in v:
            return len(v["N"].lstrip("-").replace(".", "")) // 2 + 2
        if "L" in v:
            return 3 + sum(1 + size(e) for e in v["L"])
        raise AssertionError(v)

    return sum(len(k.encode()) + size(v) for k, v in item.items())


def test_a_redelivered_message_of_a_finished_run_is_not_counted_again(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent)
    _run_now(api, agent, t["id"])
    sqs = boto3.client("sqs")
    body = sqs.receive_message(QueueUrl=queue_url("normal"), VisibilityTimeout=0)["Messages"][0]["Body"]
    workers.drain()
    sqs.send_message(QueueUrl=queue_url("normal"), MessageBody=body)  # SQS delivers it again
    with TableCalls() as calls:
        assert workers.drain() == 1
    assert calls.writes("stats") == 0 and calls.writes("runs") == 0
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")


@pytest.mark.parametrize("where", ["before_count", "count_reply_lost", "before_final_save"])
def test_a_worker_dying_around_the_count_loses_and_doubles_nothing(api, clock, workers, hooks, where):
    # GIVEN a run whose worker dies once: before its count, after the count was applied but before
    # its reply came back, or between the count and the run's final save
    agent = api.agent()
    t = _create(api, agent)
    run = _run_now(api, agent, t["id"])
    died: list[str] = []

    def note(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["table"] = params.get("TableName")
        if died:
            return
        if where == "before_count" and params.get("TableName") == "test-stats":
            died.append(where)
            raise Crash(where)
        if where == "before_final_save" and _is_final_run_save(params):
            died.append(where)
            raise Crash(where)

    def lose_reply(context: dict[str, Any], **_: Any) -> None:
        if where == "count_reply_lost" and not died and context.get("table") == "test-stats":
            died.append(where)
            raise Crash(where)

    hooks("before-parameter-build.dynamodb.UpdateItem", note)
    hooks("after-call.dynamodb.UpdateItem", lose_reply)
    workers.drain()
    assert died == [where]
    [rec] = run_records(t["id"])
    assert rec["status"] == "running"  # not final: the message stays on the queue
    counted = 0 if where == "before_count" else 1
    assert counters.read(t["id"]).run_count == counted
    # WHEN the message comes back after its visibility timeout and the lease has expired
    clock.advance(400)
    workers.drain()
    # THEN the retry runs it to the end and it is counted exactly once
    [rec] = run_records(t["id"])
    assert rec["status"] == "succeeded" and rec["attempt"] == 2
    got = _get(api, agent, t["id"])
    assert _counts(got) == (1, 0, "succeeded")
    assert StatsModel.get(t["id"]).recent == [counters.mark(run)]


def test_pause_and_cancel_with_runs_in_flight(api, clock, workers, hooks):
    # GIVEN two every-minute tasks with fires on the queue, one run executing when its task is paused
    # or canceled (the change lands between the run's pipeline and its count)
    agent = api.agent()
    a = _create(api, agent, schedule_expr="* * * * *", priority=1)  # high band: worked first
    b = _create(api, agent, schedule_expr="* * * * *", priority=9)
    clock.advance(60)
    tick(clock)
    workers.drain()
    changed: list[str] = []

    def change_first(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == "test-stats" and not changed:
            changed.append("yes")
            assert api.call("POST", f"/tasks/{a['id']}/pause", token=agent["token"]).status_code == 200
            assert api.call("POST", f"/tasks/{b['id']}/cancel", token=agent["token"]).status_code == 200

    clock.advance(60)
    tick(clock)  # fires 12:02 for both; their messages are on the queue
    hooks("before-parameter-build.dynamodb.UpdateItem", change_first)
    workers.drain()
    assert changed == ["yes"]
    # THEN the run already executing is counted; the one still queued is skipped, not counted
    statuses = sorted(r["status"] for tid in (a["id"], b["id"]) for r in run_records(tid))
    assert statuses == ["skipped", "succeeded", "succeeded", "succeeded"]
    ga, gb = _get(api, agent, a["id"]), _get(api, agent, b["id"])
    assert (ga["status"], gb["status"]) == ("paused", "canceled")
    assert _counts(ga) == _truth(a["id"]) == (2, 0, "succeeded")
    assert _counts(gb) == _truth(b["id"]) == (1, 0, "succeeded")
    assert [r["skip_reason"] for r in run_records(b["id"]) if r["status"] == "skipped"] == ["task_canceled"]
    # AND a manual run while paused is counted as usual
    _run_now(api, agent, a["id"])
    workers.drain()
    assert _get(api, agent, a["id"])["run_count"] == ga["run_count"] + 1


def test_counts_survive_their_run_records_expiring(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, schedule_kind="once", schedule_expr="2027-03-01T12:00:30Z")
    clock.advance(30)
    workers.drain()
    other = _create(api, agent, payload=BLOCKED)
    for _ in range(3):
        _run_now(api, agent, other["id"])
    workers.drain()
    assert _get(api, agent, t["id"])["status"] == "completed"
    # WHEN the retention passes: moto never deletes TTL items, so one record is marked expired
    # and the rest are deleted as DynamoDB's TTL would
    clock.advance(31 * DAY)
    recs = list(RunModel.query(t["id"])) + list(RunModel.query(other["id"]))
    recs[0].update(actions=[RunModel.expires_at.set(clock.now)])
    for rec in recs[1:]:
        rec.delete()
    # THEN the counters are unchanged, while the history is empty
    assert _counts(_get(api, agent, t["id"])) == (1, 0, "succeeded")
    assert _counts(_get(api, agent, other["id"])) == (3, 3, "failed")
    assert api.call("GET", f"/tasks/{t['id']}/runs", token=agent["token"]).data["runs"] == []


# ---- other ways a run finishes -----------------------------------------------------------------


def test_the_failed_record_of_a_schedule_the_tick_cannot_compute_is_counted_once(api, clock):
    agent = api.agent()
    t = _create(api, agent, schedule_expr="*/10 * * * *")
    boto3.client("dynamodb").update_item(
        TableName="test-tasks",
        Key={"task_id": {"S": t["id"]}},
        UpdateExpression="SET sched = :s",
        ExpressionAttributeValues={":s": {"S": '{"schedule_kind": "cron", "schedule_expr": "garbage"}'}},
    )
    clock.advance(10 * 60)
    assert tick(clock).errors
    [rec] = run_records(t["id"])
    assert rec["status"] == "failed"
    assert counters.count(t["id"], rec["id"], "failed", rec["finished_at"]) is False  # a repeated tick
    got = _get(api, agent, t["id"])
    assert _counts(got) == (1, 1, "failed") and got["last_run_at"] == rec["finished_at"]


def test_a_run_whose_message_sqs_refused_is_counted_failed(api, clock, hooks):
    agent = api.agent()
    t = _create(api, agent)

    def refuse(**_: Any) -> None:
        raise RuntimeError("SQS is down")

    sqs = boto3.client("sqs")
    sends = ("before-call.sqs.SendMessage", "before-call.sqs.SendMessageBatch")
    for event in sends:
        wiring.client("sqs").meta.events.register(event, refuse)
    try:
        r = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    finally:
        for event in sends:
            wiring.client("sqs").meta.events.unregister(event, refuse)
    assert r.status_code == 500
    [rec] = run_records(t["id"])
    assert rec["status"] == "failed" and rec["error"]["type"] == "enqueue_failed"
    assert _counts(_get(api, agent, t["id"])) == (1, 1, "failed")
    assert (
        sqs.get_queue_attributes(QueueUrl=queue_url("normal"), AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "0"
    )


def test_templates_see_the_counters_as_of_the_run_start(api, clock, workers):
    agent = api.agent()
    payload = {"steps": [{"id": "say", "type": "log", "message": "{{ task.run_count }}/{{ task.failure_count }}"}]}
    t = _create(api, agent, payload=payload)
    for _ in range(2):
        _run_now(api, agent, t["id"])
        with TableCalls() as calls:
            workers.drain()
        assert calls.calls[("stats", "GetItem")] == 1
    outputs = sorted(r["steps"][0]["output"] for r in run_records(t["id"]))
    assert outputs == ["0/0", "1/0"]


# ---- reads ---------------------------------------------------------------------------------------


def test_reads_never_write(api, clock, workers):
    agent = api.agent()
    t = _create(api, agent, payload=BLOCKED)
    for _ in range(3):
        _run_now(api, agent, t["id"])
    workers.drain()
    clock.advance(2 * DAY)  # old runs: the former design folded them on read
    with RequestCounter() as calls:
        one = _get(api, agent, t["id"])
        page = api.call("GET", "/tasks", token=agent["token"]).data["tasks"]
        assert api.call("GET", f"/tasks/{t['id']}/runs", token=agent["token"]).status_code == 200
    assert _counts(one) == (3, 3, "failed") and [_counts(x) for x in page] == [(3, 3, "failed")]
    ops = {op.split(".", 1)[1] for op in calls.calls if op.startswith("dynamodb.")}
    assert calls.calls["dynamodb.GetItem"] >= 2 and "BatchGetItem" in ops  # the reads did happen here
    assert not ops & WRITES and not any(op.startswith("sqs.") for op in calls.calls), calls.calls


def test_a_list_reads_the_counters_of_a_page_in_one_request(api, clock, workers):
    agent = api.agent()
    ids = [_create(api, agent, title=f"t{i}", **({"payload": BLOCKED} if i % 2 else {}))["id"] for i in range(12)]
    for i, tid in enumerate(ids):
        for _ in range(i % 3):
            _run_now(api, agent, tid)
    workers.drain()
    with RequestCounter() as calls:
        page = api.call("GET", "/tasks?limit=50", token=agent["token"]).data["tasks"]
    stats_reads = [p for p in calls.params["dynamodb.BatchGetItem"] if "test-stats" in p["RequestItems"]]
    assert len(stats_reads) == 1 and len(stats_reads[0]["RequestItems"]["test-stats"]["Keys"]) == 12
    assert "dynamodb.Query" not in calls.calls or all(
        p.get("TableName") != "test-runs" for p in calls.params["dynamodb.Query"]
    )
    got = {t["id"]: _counts(t) for t in page}
    for i, tid in enumerate(ids):
        n = i % 3
        assert got[tid] == (n, n if i % 2 else 0, None if n == 0 else ("failed" if i % 2 else "succeeded"))
        assert got[tid] == _counts(_get(api, agent, tid))


def test_only_the_functions_that_count_or_read_may_touch_the_stats_table():
    res = json.loads((ROOT / "infra" / "resources.json").read_text())["Resources"]
    props = res["StatsTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "task_id", "KeyType": "HASH"}]
    assert "TimeToLiveSpecification" not in props  # counts outlive the run records
    grants = {}
    for name, r in res.items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        for s in r["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
            if isinstance(s, dict) and s.get("Resource") == {"Fn::GetAtt": ["StatsTable", "Arn"]}:
                grants.setdefault(name, set()).update(s["Action"])
    worker = {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    assert grants == {
        "ApiRole": {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem"},
        "TickRole": {"dynamodb:UpdateItem"},
        "WorkerHighRole": worker,
        "WorkerNormalRole": worker,
        "WorkerLowRole": worker,
        "AwsEventsRole": {"dynamodb:UpdateItem"},
    }
