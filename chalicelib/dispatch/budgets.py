"""Per-agent run budgets: runs a minute (a GCRA bucket named `runs` on the agent's item, the
algorithm of the request rate limits) and runs in flight (opt-in, taken by the worker).

Runs are charged where they are made, in batches, never one write per scheduled run:
- the tick: each agent's fires of a tick are admitted against its bucket as read once per tick
  (with the agent, which the tick reads anyway), and what was admitted is written back once per agent at the
  end of the tick (one write, `TickBudgets.flush`), whatever the number of shards and pages;
- dispatch-on-write, run now and event fan-out: one `take_up_to` for the runs they make.
Retries are attempts of the same run and are never charged. Runs over budget are recorded
`skipped` / `budget_exceeded` (visible in the task's run history) and their schedule moves on.

The tick admits against the bucket as it read it: a run now or an event of the same agent
admitted while the tick works is charged too, so the bucket may end up to one burst past its
allowance (in debt); it then admits nothing until it has recovered, so the rate over time holds.
A tick that crashes after sending and before its flush leaves those fires uncharged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from chalicelib.domain import budgets
from chalicelib.domain.budgets import RunLimits
from chalicelib.domain.records import Agent
from chalicelib.domain.runs import RunMessage
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.store import stores

BUCKET = "runs"
# The concurrency-slot namespace of the in-flight budget: `conc#in-flight#<agent>#<i>`. A task's
# own concurrency slots are `conc#<agent uuid>#<key>#<i>`, which can never start like this.
IN_FLIGHT = "in-flight"
_CHARGE_ROUNDS = 4
_NO_CEILING_MS = 2**62


def defaults() -> RunLimits:
    s = settings()
    return RunLimits(s.agent_runs_per_minute, s.agent_runs_burst, s.agent_runs_in_flight, s.min_interval_seconds)


def limits_of(agent: Agent | None) -> RunLimits:
    """What applies to the agent: its own values (the admin's), else the operator's defaults."""
    if agent is None:
        return defaults()
    return budgets.effective(defaults(), **{name: getattr(agent, name) for name in budgets.FIELDS})


def epoch_ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def take(agent: Agent | None, n: int, now: datetime) -> int:
    """Charge up to `n` runs of `agent` now, in one conditional write: how many may go. An agent
    without a record is not limited here (its tasks are the API's to clean up)."""
    if agent is None or n <= 0:
        return max(n, 0)
    limits = limits_of(agent)
    if limits.runs_per_minute <= 0:
        return n
    return stores().agents.take_up_to(
        agent.agent_id, BUCKET, n, now_ms=epoch_ms(now), step_ms=limits.step_ms, burst=limits.runs_burst
    )


def charge(agent_id: str, n: int, now_ms: int, step_ms: int) -> bool:
    """Record `n` runs already admitted, whatever the bucket's room (the tick's flush): a
    restart if the bucket is idle, else an add. False: the agent is gone."""
    agents = stores().agents
    for _ in range(_CHARGE_ROUNDS):
        if agents.restart_bucket(agent_id, BUCKET, now_ms + n * step_ms, idle_before_ms=now_ms):
            return True
        if agents.advance_bucket(agent_id, BUCKET, n * step_ms, low_ms=now_ms, high_ms=_NO_CEILING_MS):
            return True
        if agents.bucket(agent_id, BUCKET) is None:
            return False
    return False


def stamped(msg: RunMessage, limits: RunLimits) -> RunMessage:
    """The message carries the in-flight ceiling, so the worker needs no read of the agent."""
    return replace(msg, in_flight=limits.runs_in_flight) if limits.runs_in_flight > 0 else msg


@dataclass
class _Ledger:
    limits: RunLimits
    lock: threading.Lock = field(default_factory=threading.Lock)
    room: int | None = None  # None: the bucket not read yet
    admitted: int = 0


class TickBudgets:
    """One tick's view of its agents' buckets, shared by the shards' threads: each bucket read
    once, admissions counted here, and written back once per agent (`flush`)."""

    def __init__(
        self, now: datetime, agent: Callable[[str], Agent | None], bucket: Callable[[str], int | None]
    ) -> None:
        self.now_ms = epoch_ms(now)
        self._agent = agent
        self._bucket = bucket  # the agent's run bucket, read with the agent
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}

    def admit(self, agent_id: str, n: int) -> tuple[int, RunLimits]:
        """How many of `n` fires of the agent may go, and the limits that apply to it."""
        agent = self._agent(agent_id)
        limits = limits_of(agent)
        if agent is None or limits.runs_per_minute <= 0 or n <= 0:
            return max(n, 0), limits
        with self._lock:
            ledger = self._ledgers.setdefault(agent_id, _Ledger(limits))
        with ledger.lock:
            if ledger.room is None:
                tat = self._bucket(agent_id)
                ledger.room = budgets.room(tat, self.now_ms, limits.step_ms, limits.runs_burst)
            k = max(0, min(n, ledger.room - ledger.admitted))
            ledger.admitted += k
        return k, limits

    def flush(self) -> int:
        """Write what was admitted back to each agent's bucket; returns the agents charged."""
        with self._lock:
            ledgers = [(a, g) for a, g in self._ledgers.items() if g.admitted > 0]
            self._ledgers = {}
        charged = 0
        for agent_id, ledger in ledgers:
            try:
                charged += charge(agent_id, ledger.admitted, self.now_ms, ledger.limits.step_ms)
            except Exception:  # noqa: BLE001 - the runs went out; the next tick reads the bucket again
                logger.warning("run_budget_not_charged", extra={"agent_id": agent_id, "runs": ledger.admitted})
        return charged
