"""Agents, authentication, egress lists and rate limits on the in-memory stores (no moto)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import store
from chalicelib.domain.errors import AgentNotFound, Forbidden, RateLimited, Unauthenticated
from chalicelib.domain.records import Agent, AgentStatus
from chalicelib.platform.config import settings
from chalicelib.services import agents, ratelimit
from chalicelib.services.agents import Caller
from chalicelib.store import Stores


@pytest.fixture()
def mem() -> Iterator[Stores]:
    stores = store.in_memory()
    store.use(stores)
    yield stores
    store.use(None)


def seed(stores: Stores, *, status: AgentStatus = AgentStatus.ACTIVE, created_at: str = "2027-03-01T00:00:00Z") -> str:
    """An agent whose secret is sealed already (no KMS call); its token."""
    agent_id = str(uuid.uuid4())
    token = f"{agents.TOKEN_PREFIX}{uuid.UUID(agent_id).hex}_secret-part"
    agent = Agent(agent_id, "n", created_at, status, agents.hash_token(token), "kms1:c2VhbGVk")
    assert stores.agents.put_if_absent(agent)
    return token


def agent_of(token: str) -> str:
    return str(uuid.UUID(hex=token.split("_")[1]))


def test_a_token_authenticates_its_agent_until_revoked(mem: Stores) -> None:
    token = seed(mem)
    assert agents.authenticate(f"Bearer {token}") == Caller(agent_of(token))
    revoked = agents.revoke_agent(agent_of(token))
    assert revoked["status"] == "revoked"
    with pytest.raises(Unauthenticated):
        agents.authenticate(f"Bearer {token}")  # the very next request


@pytest.mark.parametrize(
    "header",
    [None, "Basic x", "Bearer tapi_zz_x", "Bearer tapi_", "Bearer tapi_0123456789abcdef0123456789abcdef_guess"],
)
def test_anything_else_is_refused(mem: Stores, header: str | None) -> None:
    token = seed(mem)
    with pytest.raises(Unauthenticated):
        agents.authenticate(header)
    wrong = token[:-1] + ("x" if token[-1] != "x" else "y")  # the right agent, the wrong secret
    with pytest.raises(Unauthenticated):
        agents.authenticate(f"Bearer {wrong}")


def test_revoking_an_unknown_agent_is_not_found(mem: Stores) -> None:
    with pytest.raises(AgentNotFound):
        agents.revoke_agent(str(uuid.uuid4()))


def test_agents_are_listed_newest_first(mem: Stores) -> None:
    old, new = seed(mem, created_at="2027-01-01T00:00:00Z"), seed(mem, created_at="2027-02-01T00:00:00Z")
    assert [a["agent_id"] for a in agents.list_agents()] == [agent_of(new), agent_of(old)]


def test_egress_lists_are_the_admins_to_set_and_the_agents_to_read(mem: Stores) -> None:
    a, b = agent_of(seed(mem)), agent_of(seed(mem))
    assert agents.egress_for_run(a).aws_targets == ()
    doc = agents.set_egress(a, ["arn:1", "arn:1", "arn:2"], ["h.test"])
    assert doc == {"agent_id": a, "aws_targets": ["arn:1", "arn:2"], "http_allow": ["h.test"]}
    assert agents.get_egress(Caller(a), a) == doc
    assert agents.get_egress(Caller(None, True), a) == doc
    with pytest.raises(Forbidden):
        agents.get_egress(Caller(b), a)
    run = agents.egress_for_run(a)
    assert run.aws_targets == ("arn:1", "arn:2") and run.http_allow == ("h.test",)
    assert agents.egress_for_run(str(uuid.uuid4())).aws_targets == ()
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(AgentNotFound):
            agents.set_egress(missing, [], [])


# ---- rate limits ----------------------------------------------------------------------------


@pytest.fixture()
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TASKAPI_RATE_WRITES_PER_MINUTE", "60")  # one a second
    monkeypatch.setenv("TASKAPI_RATE_WRITES_BURST", "3")
    settings.cache_clear()
    yield
    monkeypatch.undo()
    settings.cache_clear()


def test_a_burst_then_one_a_second(mem: Stores, limits: None) -> None:
    a = agent_of(seed(mem))
    t = 1_800_000_000_000
    for _ in range(3):
        ratelimit.take(a, "writes", t)
    with pytest.raises(RateLimited) as refused:
        ratelimit.take(a, "writes", t)
    assert refused.value.retry_after == 1
    ratelimit.take(a, "writes", t + 1_000)  # one interval later: one more
    ratelimit.take(a, "events", t)  # the other bucket is untouched
    ratelimit.take(a, "writes", t + 60_000)  # idle: the bucket restarts
    assert mem.agents.bucket(a, "writes") == t + 61_000


def test_concurrent_requests_spend_the_burst_exactly(mem: Stores, limits: None) -> None:
    a = agent_of(seed(mem))
    start = threading.Barrier(8)
    out: list[Any] = []
    lock = threading.Lock()

    def go() -> None:
        start.wait()
        try:
            ratelimit.take(a, "writes", 1_800_000_000_000)
            result: Any = "ok"
        except RateLimited as e:
            result = e
        with lock:
            out.append(result)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out.count("ok") == 3 and len(out) == 8


def test_a_limit_of_zero_limits_nothing(mem: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKAPI_RATE_EVENTS_PER_MINUTE", "0")
    settings.cache_clear()
    try:
        a = agent_of(seed(mem))
        for _ in range(500):
            ratelimit.take(a, "events", 1_800_000_000_000)
        assert mem.agents.bucket(a, "events") is None
    finally:
        monkeypatch.undo()
        settings.cache_clear()
