"""Per-agent rate limits: one agent's burst is refused with 429 + Retry-After, refills with
time, and never touches another agent's budget."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.platform.config import settings
from chalicelib.services.ratelimit import Limit, decide
from tests.integration.conftest import task_body


@pytest.fixture()
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "TASKAPI_RATE_WRITES_PER_MINUTE": "60",
        "TASKAPI_RATE_WRITES_BURST": "3",
        "TASKAPI_RATE_EVENTS_PER_MINUTE": "30",
        "TASKAPI_RATE_EVENTS_BURST": "2",
    }.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    yield
    monkeypatch.undo()
    settings.cache_clear()


def test_gcra_allows_the_burst_then_one_an_interval():
    limit = Limit(per_minute=60, burst=3)
    tat, now = None, 1_000_000
    for _ in range(3):
        tat, wait = decide(tat, now, limit)
        assert tat is not None and wait == 0
    refused, wait = decide(tat, now, limit)
    assert refused is None and wait == pytest.approx(1.0)
    again, _ = decide(tat, now + 1000, limit)
    assert again is not None


def test_a_bursting_agent_gets_429_with_retry_after_and_others_are_untouched(api, clock, small_limits):
    noisy, quiet = api.agent("noisy"), api.agent("quiet")
    codes = [
        api.call("POST", "/tasks", task_body(noisy["agent_id"]), token=noisy["token"]).status_code for _ in range(5)
    ]
    assert codes == [201, 201, 201, 429, 429]
    r = api.call("POST", "/tasks", task_body(noisy["agent_id"]), token=noisy["token"])
    assert r.headers["Content-Type"] == "application/problem+json" and r.data["status"] == 429
    assert r.headers["Retry-After"] == "1" and "rate limit" in r.data["detail"]
    # Reads are not limited, and nothing was stored by the refused writes.
    listed = api.call("GET", "/tasks", token=noisy["token"])
    assert listed.status_code == 200 and len(listed.data["tasks"]) == 3
    # Another agent has its own bucket.
    assert api.call("POST", "/tasks", task_body(quiet["agent_id"]), token=quiet["token"]).status_code == 201
    # The bucket refills with time: one more a second.
    clock.advance(1.0)
    assert api.call("POST", "/tasks", task_body(noisy["agent_id"]), token=noisy["token"]).status_code == 201
    assert api.call("POST", "/tasks", task_body(noisy["agent_id"]), token=noisy["token"]).status_code == 429


def test_events_have_their_own_bucket(api, clock, small_limits):
    agent = api.agent()
    codes = [api.call("POST", "/events", {"name": "x"}, token=agent["token"]).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    # Writes are still available: a separate bucket.
    assert api.call("POST", "/tasks", task_body(agent["agent_id"]), token=agent["token"]).status_code == 201


def test_the_admin_is_not_limited(api, clock, small_limits):
    assert all(
        api.call(
            "POST", "/agents", {"name": f"a{i}"}, headers={"Authorization": "Bearer admin-token-for-tests-only"}
        ).status_code
        == 201
        for i in range(6)
    )


def test_concurrent_requests_of_one_agent_spend_the_bucket_exactly(api, clock, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("TASKAPI_RATE_EVENTS_PER_MINUTE", "6")
    monkeypatch.setenv("TASKAPI_RATE_EVENTS_BURST", "10")
    settings.cache_clear()
    try:
        agent = api.agent()
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda _: api.call("POST", "/events", {"name": "x"}, token=agent["token"]).status_code, range(30)
                )
            )
        # The clock stands still: exactly the burst goes through, whatever the interleaving.
        assert codes.count(202) == 10 and codes.count(429) == 20
    finally:
        monkeypatch.undo()
        settings.cache_clear()
