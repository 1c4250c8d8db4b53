"""The execution ports' contract (RunStore, StatsStore, LeaseStore), run against both adapters:
DynamoDB (PynamoDB on moto, the tables from infra/resources.json) and in memory. Every verb,
its conflicting cases, and threads racing on the same conditional verb (exactly one wins)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain import attempts
from chalicelib.domain.counting import RECENT_KEEP, RECENT_MAX, Counters, mark
from chalicelib.domain.records import Run, RunStatus
from chalicelib.store import Stores
from chalicelib.store.ports import Slot

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
TASK = "00000000-0000-4000-8000-00000000000a"


@pytest.fixture()
def s(stores: Stores) -> Stores:
    """Both adapters (`tests/store/conftest.py`)."""
    return stores


def _run(run_id: str = "1796126400-s0000000000000001", **over: Any) -> Run:
    doc = {
        "id": run_id,
        "task_id": TASK,
        "trigger": "schedule",
        "status": "queued",
        "attempt": 0,
        "max_attempts": 2,
        "scheduled_for": "2027-03-01T12:00:00Z",
        "finished_at": None,
        "steps": [],
        **over.pop("doc", {}),
    }
    status = over.pop("status", RunStatus(doc["status"]))
    doc["status"] = str(status)
    return Run(
        task_id=TASK,
        run_id=run_id,
        agent_id="agent-1",
        status=status,
        doc=doc,
        expires_at=NOW + timedelta(days=30),
        **over,
    )


def _race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) on n threads released together; their results in index order."""
    out: list[Any] = [None] * n
    gate = threading.Barrier(n)

    def one(i: int) -> None:
        gate.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out


# ---- RunStore ---------------------------------------------------------------------------------


def test_put_if_absent_creates_once_and_get_reads_it_back(s: Stores) -> None:
    run = _run()
    assert s.runs.get(TASK, run.run_id) is None
    assert s.runs.put_if_absent(run) is True
    assert s.runs.put_if_absent(_run(status=RunStatus.SKIPPED)) is False
    got = s.runs.get(TASK, run.run_id)
    assert got is not None
    assert (got.status, dict(got.doc), got.agent_id, got.lease_until) == (
        RunStatus.QUEUED,
        dict(run.doc),
        "agent-1",
        None,
    )
    assert got.expires_at == run.expires_at


def test_a_claim_without_a_read_creates_the_run_claimed(s: Stores) -> None:
    out = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed)
    assert (out.run.status, out.run.attempt, out.run.lease_until) == (RunStatus.RUNNING, 1, T + 60)
    assert out.run.doc["started_at"] == "2027-03-01T12:00:00Z" and out.run.doc["start_lag_ms"] == 0
    stored = s.runs.get(TASK, out.run.run_id)
    assert stored is not None and (stored.status, stored.attempt, stored.lease_until) == (RunStatus.RUNNING, 1, T + 60)


def test_a_claim_without_a_read_of_an_existing_queued_run_reads_and_claims_it(s: Stores) -> None:
    s.runs.put_if_absent(_run())
    out = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed) and out.run.attempt == 1


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED])
def test_a_claim_of_a_finished_run_finds_it_finished_and_changes_nothing(s: Stores, status: RunStatus) -> None:
    done = _run(status=status, doc={"attempt": 1})
    s.runs.put_if_absent(done)
    for seen in (None, done):
        out = s.runs.claim_run(_run(), seen=seen, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
        assert isinstance(out, attempts.AlreadyFinished) and out.run.status is status
    assert s.runs.get(TASK, done.run_id) == done


def test_a_claim_of_a_run_under_a_live_lease_is_held_elsewhere(s: Stores) -> None:
    held = _run(status=RunStatus.RUNNING, doc={"attempt": 1}, lease_until=T + 1)
    s.runs.put_if_absent(held)
    out = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.HeldElsewhere)
    assert s.runs.get(TASK, held.run_id) == held


def test_a_takeover_after_the_lease_counts_an_attempt(s: Stores) -> None:
    lost = _run(status=RunStatus.RUNNING, doc={"attempt": 1}, lease_until=T - 1)
    s.runs.put_if_absent(lost)
    out = s.runs.claim_run(lost, seen=lost, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed) and (out.run.attempt, out.run.lease_until) == (2, T + 60)
    stored = s.runs.get(TASK, lost.run_id)
    assert stored is not None and (stored.attempt, stored.lease_until) == (2, T + 60)


def test_a_takeover_of_a_run_whose_attempts_are_spent_takes_the_lease_without_an_attempt(s: Stores) -> None:
    lost = _run(status=RunStatus.RUNNING, doc={"attempt": 2, "max_attempts": 2}, lease_until=T - 1)
    s.runs.put_if_absent(lost)
    out = s.runs.claim_run(lost, seen=None, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.AttemptsSpent)
    assert (out.run.status, out.run.attempt, out.run.lease_until) == (RunStatus.RUNNING, 2, T + 60)
    stored = s.runs.get(TASK, lost.run_id)
    assert stored is not None and (stored.attempt, stored.lease_until) == (2, T + 60)


def test_a_claim_from_a_stale_read_loses_the_race(s: Stores) -> None:
    queued = _run()
    s.runs.put_if_absent(queued)
    first = s.runs.claim_run(queued, seen=queued, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(first, attempts.Claimed)
    again = s.runs.claim_run(
        queued, seen=queued, lease_until=T + 60, now=NOW + timedelta(seconds=61), claim=secrets.token_hex(4)
    )
    assert isinstance(again, attempts.LostRace)
    assert s.runs.get(TASK, queued.run_id) == first.run


def test_a_claim_whose_answer_was_lost_is_recognised_as_ours(s: Stores) -> None:
    # A create and an update that landed, their answers lost: the SDK resends, the resend fails
    # its condition, and the claim must still be ours (not "held elsewhere", which would leave
    # the run running with nobody executing it).
    first = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim="c1")
    resent = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim="c1")
    assert isinstance(first, attempts.Claimed) and isinstance(resent, attempts.Claimed)
    assert resent.run == first.run and resent.run.attempt == 1
    other = s.runs.claim_run(_run(), seen=None, lease_until=T + 60, now=NOW, claim="c2")
    assert isinstance(other, attempts.HeldElsewhere)

    retrying = _run(run_id="r-2", status=RunStatus.RETRYING, doc={"attempt": 1})
    s.runs.put_if_absent(retrying)
    took = s.runs.claim_run(retrying, seen=retrying, lease_until=T + 60, now=NOW, claim="c3")
    again = s.runs.claim_run(retrying, seen=retrying, lease_until=T + 60, now=NOW, claim="c3")
    assert isinstance(took, attempts.Claimed) and isinstance(again, attempts.Claimed)
    assert again.run.attempt == took.run.attempt == 2
    stolen = s.runs.claim_run(retrying, seen=retrying, lease_until=T + 60, now=NOW, claim="c4")
    assert isinstance(stolen, attempts.LostRace)


def _claimed(s: Stores, *, attempt: int = 0, lease_until: int = T + 60, now: datetime = NOW) -> Run:
    seen = _run(status=RunStatus.RETRYING if attempt else RunStatus.QUEUED, doc={"attempt": attempt})
    s.runs.put_if_absent(seen)
    out = s.runs.claim_run(seen, seen=seen, lease_until=lease_until, now=now, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed)
    return out.run


def test_finish_and_save_attempt_are_fenced_against_a_newer_attempt(s: Stores) -> None:
    # GIVEN attempt 1's worker overran its lease and attempt 2 took the run over
    first = _claimed(s, lease_until=T + 60)
    later = NOW + timedelta(seconds=61)
    out = s.runs.claim_run(first, seen=first, lease_until=T + 121, now=later, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed) and out.run.attempt == 2
    second = out.run
    # WHEN attempt 1's worker records its outcome THEN it is refused, whatever it is
    assert s.runs.finish(first, attempts.ended(first, RunStatus.FAILED, later)) is False
    retrying = first.evolve(status=RunStatus.RETRYING, lease_until=None, doc={**first.doc, "status": "retrying"})
    assert s.runs.save_attempt(first, retrying) is False
    assert s.runs.get(TASK, first.run_id) == second
    # AND the newer attempt's own outcome is saved, lease released
    final = attempts.ended(second, RunStatus.SUCCEEDED, later)
    assert s.runs.finish(second, final) is True
    stored = s.runs.get(TASK, first.run_id)
    assert stored is not None and (stored.status, stored.attempt, stored.lease_until) == (RunStatus.SUCCEEDED, 2, None)
    assert stored.doc["finished_at"] == "2027-03-01T12:01:01Z" and stored.expires_at == first.expires_at
    # Final once: another outcome of the same attempt is refused (the record is no longer running)
    assert s.runs.finish(second, attempts.ended(second, RunStatus.FAILED, later + timedelta(seconds=1))) is False
    assert s.runs.get(TASK, first.run_id) == stored


def test_an_outcome_whose_answer_was_lost_is_recorded_not_superseded(s: Stores) -> None:
    # The save landed, its answer was lost, the SDK resent it and the resend failed its fence:
    # the outcome is recorded. Taken for superseded, a `retrying` save drops the run's message
    # and leaves the run `retrying` with nothing to bring it back.
    run = _claimed(s)
    retrying = run.evolve(
        status=RunStatus.RETRYING,
        lease_until=None,
        doc={**run.doc, "status": "retrying", "next_attempt_at": "2027-03-01T12:00:10Z"},
    )
    assert s.runs.save_attempt(run, retrying) is True
    assert s.runs.save_attempt(run, retrying) is True  # the resend
    out = s.runs.claim_run(retrying, seen=retrying, lease_until=T + 90, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed)
    second = out.run
    final = attempts.ended(second, RunStatus.SUCCEEDED, NOW)
    assert s.runs.finish(second, final) is True
    assert s.runs.finish(second, final) is True  # the resend
    # The older attempt's outcomes, resent or not, were never what the store holds.
    assert s.runs.save_attempt(run, retrying) is False
    assert s.runs.finish(run, attempts.ended(run, RunStatus.SUCCEEDED, NOW)) is False
    stored = s.runs.get(TASK, run.run_id)
    assert stored is not None and (stored.status, stored.attempt, stored.claim) == (
        RunStatus.SUCCEEDED,
        2,
        second.claim,
    )


def test_save_attempt_records_a_retry_and_releases_the_lease(s: Stores) -> None:
    run = _claimed(s)
    retrying = run.evolve(status=RunStatus.RETRYING, lease_until=None, doc={**run.doc, "status": "retrying"})
    assert s.runs.save_attempt(run, retrying) is True
    stored = s.runs.get(TASK, run.run_id)
    assert stored is not None and (stored.status, stored.attempt, stored.lease_until) == (RunStatus.RETRYING, 1, None)
    out = s.runs.claim_run(stored, seen=stored, lease_until=T + 90, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(out, attempts.Claimed) and out.run.attempt == 2


def test_settle_is_conditional_on_the_run_being_as_seen(s: Stores) -> None:
    queued = _run()
    s.runs.put_if_absent(queued)
    skipped = attempts.ended(queued, RunStatus.SKIPPED, NOW, skip_reason="task_canceled")
    claimed = s.runs.claim_run(queued, seen=queued, lease_until=T + 60, now=NOW, claim=secrets.token_hex(4))
    assert isinstance(claimed, attempts.Claimed)
    assert s.runs.settle(queued, skipped) is False  # claimed meanwhile: not ours to skip
    assert s.runs.get(TASK, queued.run_id) == claimed.run
    other = _run("1796126400-s0000000000000002")
    s.runs.put_if_absent(other)
    assert s.runs.settle(other, attempts.failed(other, "enqueue_failed", "x" * 600, NOW)) is True
    stored = s.runs.get(TASK, other.run_id)
    assert stored is not None and stored.status is RunStatus.FAILED
    assert stored.doc["error"] == {"type": "enqueue_failed", "message": "x" * 500, "step": None}


def test_racing_claims_of_one_run_have_exactly_one_winner(s: Stores) -> None:
    fresh = _run()
    outs = _race(8, lambda i: s.runs.claim_run(fresh, seen=None, lease_until=T + 60, now=NOW, claim=f"c{i}"))
    assert sum(isinstance(o, attempts.Claimed) for o in outs) == 1
    assert all(isinstance(o, attempts.Claimed | attempts.HeldElsewhere | attempts.LostRace) for o in outs)
    stored = s.runs.get(TASK, fresh.run_id)
    assert stored is not None and stored.attempt == 1
    # the same from a shared read of a run between attempts
    between = _run("1796126400-s0000000000000003", status=RunStatus.RETRYING, doc={"attempt": 1})
    s.runs.put_if_absent(between)
    outs = _race(8, lambda i: s.runs.claim_run(between, seen=between, lease_until=T + 60, now=NOW, claim=f"c{i}"))
    assert [type(o) for o in outs].count(attempts.Claimed) == 1
    assert [type(o) for o in outs].count(attempts.LostRace) == 7
    stored = s.runs.get(TASK, between.run_id)
    assert stored is not None and stored.attempt == 2


def test_racing_finishes_of_one_attempt_save_once(s: Stores) -> None:
    run = _claimed(s)
    outs = _race(6, lambda i: s.runs.finish(run, attempts.ended(run, RunStatus.SUCCEEDED, NOW, note=i)))
    assert outs.count(True) == 1
    stored = s.runs.get(TASK, run.run_id)
    assert stored is not None and stored.doc["note"] == outs.index(True)


def test_a_tasks_runs_page_newest_first_without_expired_ones(s: Stores) -> None:
    ids = [f"17961264{i:02d}-m{i:016x}" for i in range(5)]
    for rid in ids:
        s.runs.put_if_absent(_run(rid))
    s.runs.put_if_absent(_run("1796126499-expired").evolve(expires_at=NOW - timedelta(seconds=1)))
    other = _run("1796126401-other").evolve(task_id="00000000-0000-4000-8000-00000000000b")
    s.runs.put_if_absent(other)
    first = s.runs.newest_first(TASK, before=None, limit=2, now=NOW)
    assert [r.run_id for r in first.runs] == ids[::-1][:2] and first.more
    rest = s.runs.newest_first(TASK, before=first.runs[-1].run_id, limit=10, now=NOW)
    assert [r.run_id for r in rest.runs] == ids[::-1][2:] and not rest.more
    exact = s.runs.newest_first(TASK, before=None, limit=5, now=NOW)
    assert len(exact.runs) == 5 and not exact.more
    assert s.runs.newest_first("00000000-0000-4000-8000-00000000000c", before=None, limit=5, now=NOW).runs == []


# ---- RunSweep ---------------------------------------------------------------------------------


def _pass(s: Stores, limit: int) -> tuple[list[tuple[str, str]], int]:
    """A whole pass from the start as the tick makes it (a page, then the cursor kept): the
    runs seen in order, and the pages it took."""
    s.sweep.keep_cursor(None)
    seen: list[tuple[str, str]] = []
    for pages in range(1, 50):
        page = s.sweep.page(s.sweep.cursor(), limit=limit)
        assert len(page.runs) <= limit
        seen += [(r.task_id, r.run_id) for r in page.runs]
        s.sweep.keep_cursor(page.next)
        if page.next is None:
            return seen, pages
    raise AssertionError("the pass never reached the table's end")


def test_the_sweep_pages_over_every_run_once_and_its_cursor_wraps(s: Stores) -> None:
    other = "00000000-0000-4000-8000-00000000000b"
    made = {(TASK, f"17961264{i:02d}-m{i:016x}") for i in range(7)} | {(other, "1796126401-other")}
    for task_id, run_id in made:
        assert s.runs.put_if_absent(_run(run_id).evolve(task_id=task_id))
    assert s.sweep.cursor() is None  # a new table's pass starts at the start
    seen, pages = _pass(s, limit=3)
    assert sorted(seen) == sorted(made)  # every run once, whatever the storage order
    assert 3 <= pages <= 4  # 8 runs, 3 a page (a full last page may be followed by an empty one)
    assert s.sweep.cursor() is None  # wrapped: the next tick starts over
    again, _ = _pass(s, limit=100)
    assert sorted(again) == sorted(made)
    # Records come back whole: what the sweep judges is the stored run.
    first = s.sweep.page(None, limit=100).runs
    one = next(r for r in first if r.run_id == "1796126400-m0000000000000000")
    assert (one.status, one.attempt, one.doc["scheduled_for"]) == (RunStatus.QUEUED, 0, "2027-03-01T12:00:00Z")


def test_the_sweep_cursor_is_kept_and_a_page_resumes_after_it(s: Stores) -> None:
    for i in range(5):
        s.runs.put_if_absent(_run(f"17961264{i:02d}-m{i:016x}"))
    first = s.sweep.page(None, limit=2)
    assert len(first.runs) == 2 and first.next is not None
    s.sweep.keep_cursor(first.next)
    assert s.sweep.cursor() == first.next
    rest = s.sweep.page(s.sweep.cursor(), limit=10)
    assert {r.run_id for r in rest.runs}.isdisjoint({r.run_id for r in first.runs}) and len(rest.runs) == 3
    assert rest.next is None
    assert s.sweep.page(None, limit=10).next is None and s.sweep.page(None, limit=1).next is not None


# ---- StatsStore -------------------------------------------------------------------------------


def test_a_run_is_counted_once_and_the_last_run_only_moves_forward(s: Stores) -> None:
    assert s.stats.read(TASK) == Counters()
    assert s.stats.count(TASK, "r1", "succeeded", "2027-03-01T12:00:05Z") is True
    assert s.stats.count(TASK, "r1", "succeeded", "2027-03-01T12:00:05Z") is False
    assert s.stats.count(TASK, "r2", "failed", "2027-03-01T12:00:09Z") is True
    assert s.stats.count(TASK, "r3", "succeeded", "2027-03-01T12:00:01Z") is True  # finished earlier
    assert s.stats.read(TASK) == Counters("2027-03-01T12:00:09Z", "failed", 3, 1)
    assert s.stats.recent(TASK) == [mark("r1"), mark("r2"), mark("r3")]
    other = "00000000-0000-4000-8000-00000000000b"
    got = s.stats.read_many([TASK, other, TASK])
    assert got == {TASK: Counters("2027-03-01T12:00:09Z", "failed", 3, 1), other: Counters()}


def test_recent_marks_are_trimmed_to_the_newest(s: Stores) -> None:
    ids = [f"r{i}" for i in range(RECENT_MAX + 1)]
    for rid in ids:
        assert s.stats.count(TASK, rid, "succeeded", "2027-03-01T12:00:00Z")
    assert s.stats.recent(TASK) == [mark(r) for r in ids[-RECENT_KEEP:]]
    assert s.stats.count(TASK, ids[-1], "succeeded", "2027-03-01T12:00:00Z") is False
    assert s.stats.count(TASK, ids[0], "succeeded", "2027-03-01T12:00:00Z") is True  # the bound: forgotten
    assert s.stats.read(TASK).run_count == RECENT_MAX + 2


def test_racing_counts_of_one_run_count_it_once(s: Stores) -> None:
    outs = _race(8, lambda i: s.stats.count(TASK, "r1", "failed", f"2027-03-01T12:00:0{i}Z"))
    assert outs.count(True) == 1
    got = s.stats.read(TASK)
    assert (got.run_count, got.failure_count) == (1, 1)


# ---- LeaseStore -------------------------------------------------------------------------------


def test_a_dedupe_window_is_taken_once_until_it_ends(s: Stores) -> None:
    assert s.leases.take_dedupe("a1", "nightly", "run-1", now=T, window=600) is True
    assert s.leases.take_dedupe("a1", "nightly", "run-2", now=T + 599, window=600) is False
    assert s.leases.take_dedupe("a1", "nightly", "run-1", now=T + 1, window=600) is True  # its own copy
    assert s.leases.take_dedupe("a2", "nightly", "run-3", now=T, window=600) is True  # another agent's key
    assert s.leases.take_dedupe("a1", "nightly", "run-2", now=T + 601, window=600) is True


def test_concurrency_slots_are_limited_leases(s: Stores) -> None:
    a = s.leases.acquire_slot("a1", "crm", 2, "run-a", now=T, lease=60)
    b = s.leases.acquire_slot("a1", "crm", 2, "run-b", now=T, lease=60)
    assert a is not None and b is not None and a.key != b.key and a.fresh and b.fresh
    assert s.leases.acquire_slot("a1", "crm", 2, "run-c", now=T, lease=60) is None
    assert s.leases.acquire_slot("a1", "crm", 2, "run-a", now=T, lease=60) == Slot(a.key, fresh=False)
    s.leases.release_slot(a, "run-c")  # not the holder: nothing happens
    assert s.leases.acquire_slot("a1", "crm", 2, "run-c", now=T, lease=60) is None
    s.leases.release_slot(a, "run-a")
    c = s.leases.acquire_slot("a1", "crm", 2, "run-c", now=T, lease=60)
    assert c is not None and c.key == a.key
    # an expired lease (a crashed holder) frees itself
    d = s.leases.acquire_slot("a1", "crm", 2, "run-d", now=T + 61, lease=60)
    assert d is not None and d.fresh


def test_racing_runs_get_at_most_limit_slots(s: Stores) -> None:
    outs = _race(8, lambda i: s.leases.acquire_slot("a1", "crm", 2, f"run-{i}", now=T, lease=60))
    got = [o for o in outs if o is not None]
    assert len(got) == 2 and len({o.key for o in got}) == 2
    outs = _race(8, lambda i: s.leases.take_dedupe("a1", "k", f"run-{i}", now=T, window=60))
    assert outs.count(True) == 1


def test_the_stuck_run_sweep_fails_a_lost_run_through_the_adapter(s: Stores) -> None:
    """The sweep end to end on each adapter (DynamoDB: the Scan page, the consistent read, the
    count and the conditional update): a run whose lease ended long ago is failed `worker_lost`
    and counted; a queued run never claimed is failed `run_stuck`; a live one is left alone."""
    from chalicelib import store
    from chalicelib.dispatch import sweeper

    later = NOW + timedelta(hours=3)  # past lease/fire + the concurrency wait (1 h) + the grace (15 min)
    lost = _run("1796126400-s00000000000000a1", status=RunStatus.RUNNING, doc={"attempt": 1}, lease_until=T + 60)
    never = _run("1796126400-s00000000000000a2")
    live = _run("1796126400-s00000000000000a3", status=RunStatus.RUNNING, doc={"attempt": 1})
    live = live.evolve(lease_until=int(later.timestamp()) + 60)
    for r in (lost, never, live):
        assert s.runs.put_if_absent(r)
    store.use(s)
    try:
        assert sweeper.sweep(later) == 2
    finally:
        store.use(None)
    got = {r.run_id: s.runs.get(TASK, r.run_id) for r in (lost, never, live)}
    assert {k: (v.status, (v.doc.get("error") or {}).get("type")) for k, v in got.items() if v} == {
        lost.run_id: (RunStatus.FAILED, attempts.WORKER_LOST),
        never.run_id: (RunStatus.FAILED, "run_stuck"),
        live.run_id: (RunStatus.RUNNING, None),
    }
    assert (s.stats.read(TASK).run_count, s.stats.read(TASK).failure_count) == (2, 2)
    assert s.sweep.cursor() is None  # one page held the table: the pass starts over
