"""The run budget's storage verbs on both adapters: `take_up_to` (up to n runs of a GCRA bucket
in one go, partial admission, exact under threads) and `set_budget` (the admin's values, mapped
both ways)."""

from __future__ import annotations

import uuid

from chalicelib.domain import budgets
from chalicelib.store import Stores
from tests.store.test_services_contract import race, seeded

STEP = 100  # ms per run: 600 a minute
BURST = 5
NOW = 1_800_000_000_000


def take(stores: Stores, agent_id: str, n: int, now: int = NOW) -> int:
    return stores.agents.take_up_to(agent_id, "runs", n, now_ms=now, step_ms=STEP, burst=BURST)


def test_an_idle_bucket_admits_a_burst_then_partially_then_nothing(stores: Stores) -> None:
    a = seeded(stores)
    assert take(stores, a.agent_id, 3) == 3  # idle: restarted, all three
    assert stores.agents.bucket(a.agent_id, "runs") == NOW + 3 * STEP
    assert take(stores, a.agent_id, 4) == 2  # room for 2 more of the burst of 5
    assert stores.agents.bucket(a.agent_id, "runs") == NOW + 5 * STEP
    assert take(stores, a.agent_id, 1) == 0  # full: nothing taken, bucket unchanged
    assert stores.agents.bucket(a.agent_id, "runs") == NOW + 5 * STEP
    assert stores.agents.bucket(a.agent_id, "writes") is None  # buckets are apart


def test_more_than_a_burst_at_once_admits_the_burst(stores: Stores) -> None:
    a = seeded(stores)
    assert take(stores, a.agent_id, 50) == BURST
    assert take(stores, a.agent_id, 0) == 0


def test_the_bucket_recovers_one_run_per_step(stores: Stores) -> None:
    a = seeded(stores)
    assert take(stores, a.agent_id, BURST) == BURST
    assert take(stores, a.agent_id, 3, NOW + 2 * STEP) == 2  # two steps later: two runs of room
    assert take(stores, a.agent_id, 1, NOW + 2 * STEP) == 0
    assert take(stores, a.agent_id, 9, NOW + 60_000) == BURST  # idle again: a whole burst


def test_a_busy_bucket_with_room_for_all_admits_all(stores: Stores) -> None:
    a = seeded(stores)
    assert take(stores, a.agent_id, 1) == 1
    assert take(stores, a.agent_id, 4) == 4  # tat = NOW + 1 step: room for exactly 4
    assert stores.agents.bucket(a.agent_id, "runs") == NOW + 5 * STEP


def test_no_agent_admits_nothing(stores: Stores) -> None:
    missing = str(uuid.uuid4())
    assert take(stores, missing, 3) == 0
    assert stores.agents.get(missing) is None  # and it created nothing


def test_concurrent_takers_never_exceed_the_allowance(stores: Stores) -> None:
    a = seeded(stores)
    got = race(8, lambda i: take(stores, a.agent_id, 1 + i % 3))
    assert sum(got) == BURST, got  # 8 takers asking 15 in all: exactly the burst admitted
    assert stores.agents.bucket(a.agent_id, "runs") == NOW + BURST * STEP
    later = race(6, lambda i: take(stores, a.agent_id, 2, NOW + 3 * STEP))
    assert sum(later) == 3, later  # three steps of room came back, no more


def test_budget_fields_are_set_replaced_and_removed(stores: Stores) -> None:
    a = seeded(stores)
    assert all(getattr(a, name) is None for name in budgets.FIELDS)
    values = {"runs_per_minute": 30, "runs_burst": 7, "runs_in_flight": 2, "min_interval_seconds": 300}
    got = stores.agents.set_budget(a.agent_id, values)
    assert got is not None and {n: getattr(got, n) for n in budgets.FIELDS} == values
    read = stores.agents.get(a.agent_id)
    assert read is not None and {n: getattr(read, n) for n in budgets.FIELDS} == values
    assert read.name == a.name and read.token_hash == a.token_hash  # nothing else changed
    again = stores.agents.set_budget(a.agent_id, {"runs_in_flight": 0})
    assert again is not None and again.runs_in_flight == 0 and again.runs_per_minute is None
    assert again.min_interval_seconds is None
    assert stores.agents.set_budget(str(uuid.uuid4()), values) is None


def test_the_agent_and_its_bucket_are_read_together(stores: Stores) -> None:
    a = seeded(stores)
    assert stores.agents.get_with_bucket(a.agent_id, "runs") == (a, None)
    assert take(stores, a.agent_id, 2) == 2
    assert stores.agents.get_with_bucket(a.agent_id, "runs") == (a, NOW + 2 * STEP)
    assert stores.agents.get_with_bucket(str(uuid.uuid4()), "runs") == (None, None)
