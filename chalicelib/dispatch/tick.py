"""The tick: every minute, send each fire due before the next tick's look-ahead to its
priority band's run queue, with `DelaySeconds` so SQS releases it at the fire instant.

A running schedule keeps exactly one pending entry in the `due` table: the next fire after
those already sent, keyed by (shard, "<fire>#<task>"). For each shard the tick takes a lease,
dispatches the schedules (re)started since (the task's sparse `due` index), then reads the
entries between the shard's watermark and the look-ahead horizon, checks each against its
task (status, schedule version, snooze), sends, writes each task's next entry, and moves the
watermark. A fire costs one small write; entries are never moved or deleted (TTL removes
them), where moving a GSI key costs three writes a fire.

A schedule that (re)starts — create, schedule update, resume, snooze — is written into the
task item's sparse `due` index in the same write as the change itself, so no crash can lose
it; its first dispatch moves it into the `due` table and clears the index attributes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import islice
from typing import TypeVar

from chalicelib.dispatch import deadletters, sweeper
from chalicelib.dispatch.budgets import BUCKET, TickBudgets, stamped
from chalicelib.dispatch.plan import Plan, current, entry_fire, plan
from chalicelib.dispatch.settle import execute, record_revoked, record_skipped, schedule_failed
from chalicelib.domain.records import Agent, AgentStatus, SkipReason
from chalicelib.domain.timefmt import epoch
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.store import stores
from chalicelib.store.ports import Acquired, DueEntry, DueFire, slot_of

SHARD_LEASE_SECONDS = 55
SHARD_BUDGET_SECONDS = SHARD_LEASE_SECONDS - 10  # stop well before the lease ends
PAGE = 50  # entries (or starts) worked together: one batch read of their tasks, ≤ 5 send batches
MAX_PARALLEL_SHARDS = 8

T = TypeVar("T")


@dataclass
class TickReport:
    dispatched: int = 0
    skipped: int = 0
    shards: int = 0
    shards_busy: int = 0
    tasks: int = 0
    stale: int = 0  # due-table entries of paused, canceled, changed or snoozed schedules: dropped
    errors: list[str] = field(default_factory=list)
    dead_lettered: int = 0  # runs the dead-letter sweep failed (deadletters.py)
    swept: int = 0  # stuck runs the stuck-run sweep failed (sweeper.py)
    over_budget: int = 0  # fires recorded skipped / budget_exceeded (among `skipped`)

    def add(self, part: TickReport) -> None:
        self.dispatched += part.dispatched
        self.skipped += part.skipped
        self.shards += part.shards
        self.shards_busy += part.shards_busy
        self.tasks += part.tasks
        self.stale += part.stale
        self.over_budget += part.over_budget
        self.errors += part.errors


class Budget:
    """The time a shard may take, on `clock` (the scale model hands in a simulated one)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stop_at = clock() + seconds

    def spent(self) -> bool:
        return self.clock() > self.stop_at


class TickAgents:
    """The tick's agents: each distinct agent read once per tick (with its run bucket), the
    shards' threads sharing the answer (the first to ask reads, the others wait for its answer),
    and their run budgets (`budgets`, written back once per agent when the tick ends). An agent
    without a record is not revoked here (its tasks are the API's to clean up)."""

    def __init__(self, now: datetime) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, Future[tuple[Agent | None, int | None]]] = {}
        self.budgets = TickBudgets(now, self.agent, self.bucket)

    def _read(self, agent_id: str) -> tuple[Agent | None, int | None]:
        with self._lock:
            known = self._known.get(agent_id)
            mine = known is None
            if known is None:
                known = self._known[agent_id] = Future()
        if mine:
            try:
                known.set_result(stores().agents.get_with_bucket(agent_id, BUCKET))
            except Exception as exc:  # noqa: BLE001 - re-raised by result(), to every thread that asks
                known.set_exception(exc)
        return known.result()

    def agent(self, agent_id: str) -> Agent | None:
        return self._read(agent_id)[0]

    def bucket(self, agent_id: str) -> int | None:
        """The agent's run bucket as the tick read it."""
        return self._read(agent_id)[1]

    def revoked(self, agent_id: str) -> bool:
        agent = self.agent(agent_id)
        return agent is not None and agent.status is AgentStatus.REVOKED


def _agent_of(p: Plan) -> str | None:
    first = p.sends[0].message if p.sends else p.missed[0] if p.missed else None
    return None if first is None else first.agent_id


def _pages(items: Iterable[T]) -> Iterator[list[T]]:
    it = iter(items)
    while page := list(islice(it, PAGE)):
        yield page


def _work(plans: list[Plan], now: datetime, report: TickReport, agents: TickAgents) -> frozenset[str]:
    """Send the plans; a revoked agent's fires are recorded `skipped` / `agent_revoked` instead,
    and fires over their agent's run budget `skipped` / `budget_exceeded` (visible in its run
    history); their schedules move on as if sent."""
    kept: list[Plan] = []
    by_agent: dict[str, list[Plan]] = defaultdict(list)
    for p in plans:
        agent = _agent_of(p)
        if p.sends and agent is not None and agents.revoked(agent):
            report.skipped += len(p.sends)
            kept.append(record_revoked(p, now))
        elif p.sends and agent is not None:
            by_agent[agent].append(p)
        else:
            kept.append(p)
    for agent, group in by_agent.items():
        kept += _within_budget(agent, group, now, report, agents.budgets)
    done = execute(kept, now)
    report.dispatched += done.sent
    report.skipped += done.skipped
    return done.unsent


def _within_budget(agent: str, group: list[Plan], now: datetime, report: TickReport, ledger: TickBudgets) -> list[Plan]:
    """One charge for the agent's fires in the page: the earliest fires go, the rest are
    recorded over budget."""
    n = sum(len(p.sends) for p in group)
    admitted, limits = ledger.admit(agent, n)
    if admitted < n:
        fires = sorted((s.message.scheduled_for, s.message.run_id) for p in group for s in p.sends)
        over = {run_id for _, run_id in fires[admitted:]}
        group = [record_skipped(p, over, SkipReason.BUDGET_EXCEEDED, now) for p in group]
        report.skipped += len(over)
        report.over_budget += len(over)
        logger.warning("runs_over_budget", extra={"agent_id": agent, "skipped": len(over), "at": "tick"})
    if limits.runs_in_flight > 0:
        group = [
            replace(p, sends=tuple(replace(s, message=stamped(s.message, limits)) for s in p.sends)) for p in group
        ]
    return group


def _plan_or_fail(due: DueFire, now: datetime, horizon: datetime, report: TickReport, *, start: bool) -> Plan | None:
    report.tasks += 1
    try:
        return plan(due, now, horizon, start=start)
    except Exception as e:  # noqa: BLE001 - one broken task must not stop the shard
        report.errors.append(f"{due.task_id}: {schedule_failed(due, e, now)}")
        return None


def _tick_starts(
    shard: str, now: datetime, horizon: datetime, budget: Budget, report: TickReport, agents: TickAgents
) -> None:
    """Schedules (re)started by the API and not yet dispatched: the task's `due` index."""
    for page in _pages(stores().due_tasks.due_tasks(shard, epoch(horizon))):
        plans = [p for due in page if (p := _plan_or_fail(due, now, horizon, report, start=True))]
        _work(plans, now, report, agents)
        if budget.spent():
            return


def _work_entries(
    entries: list[DueEntry], now: datetime, horizon: datetime, report: TickReport, agents: TickAgents
) -> str | None:
    """Dispatch a page of due-table entries; returns the slot the watermark may move to
    (None: not past any)."""
    tasks = stores().tasks.get_many({e.task_id for e in entries})  # one batch read
    plans: list[Plan] = []
    for e in entries:
        task = tasks.get(e.task_id)
        if task is None or not current(e, task):
            report.stale += 1
            continue
        if p := _plan_or_fail(entry_fire(e, task), now, horizon, report, start=False):
            plans.append(p)
    unsent = _work(plans, now, report, agents)
    # Passed entries include stale ones and ones whose schedule failed (their task is paused
    # with a schedule_error); the watermark stops before the first entry whose messages the
    # queue did not accept.
    through = None
    for e in entries:
        if e.task_id in unsent:
            break
        through = e.slot
    return through


def _tick_entries(
    shard: str, now: datetime, horizon: datetime, budget: Budget, report: TickReport, agents: TickAgents
) -> None:
    """Running schedules: the due-table entries after the shard's watermark, up to the horizon.
    The watermark moves when the tick stops, and every 10 pages of a long catch-up, so a crash
    re-sends little."""
    leases = stores().shards
    mark = leases.watermark(shard)
    upper = slot_of(epoch(horizon), "~")  # after every task id at the horizon's second
    if mark is not None and mark >= upper:
        return  # worked up to here already (a tick with an earlier clock)
    for n, page in enumerate(_pages(stores().due.read(shard, epoch(horizon), after=mark)), start=1):
        through = _work_entries(page, now, horizon, report, agents)
        stop = through != page[-1].slot or budget.spent()
        if through is not None and (stop or n % 10 == 0):
            leases.advance_watermark(shard, through)
        if through != page[-1].slot:
            logger.warning("tick_send_failed", extra={"shard": shard})
        elif stop:
            logger.warning("tick_shard_out_of_time", extra={"shard": shard})
        if stop:
            return
    leases.advance_watermark(shard, upper)  # every entry up to the horizon is dispatched


def tick_shard(
    shard: str,
    holder: str,
    now: datetime,
    horizon: datetime,
    clock: Callable[[], float] = time.monotonic,
    agents: TickAgents | None = None,
) -> TickReport:
    """One shard, under its lease; what is left when the budget runs out stays due for the
    next tick, and no other tick can take the shard while this one still works it."""
    report = TickReport()
    leases = stores().shards
    if not isinstance(leases.acquire_shard(shard, holder, epoch(now), SHARD_LEASE_SECONDS), Acquired):
        report.shards_busy = 1
        return report
    report.shards = 1
    budget = Budget(SHARD_BUDGET_SECONDS, clock)
    own = agents is None  # a shard ticked alone writes its budgets back itself
    agents = agents or TickAgents(now)
    try:
        _tick_starts(shard, now, horizon, budget, report, agents)
        if budget.spent():
            logger.warning("tick_shard_out_of_time", extra={"shard": shard})
        else:
            _tick_entries(shard, now, horizon, budget, report, agents)
    finally:
        leases.release_shard(shard, holder)
        if own:
            agents.budgets.flush()
    return report


def horizon_of(now: datetime) -> datetime:
    return now + timedelta(seconds=settings().lookahead_seconds)


def run_tick(now: datetime) -> TickReport:
    """Dispatch every fire due before the next tick's look-ahead. Shards are worked in
    parallel, each under its own lease."""
    report = TickReport()
    horizon = horizon_of(now)
    holder = uuid.uuid4().hex
    agents = TickAgents(now)
    shards = [str(s) for s in range(settings().due_shards)]
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SHARDS, len(shards)), thread_name_prefix="tick") as pool:
            for part in pool.map(lambda shard: tick_shard(shard, holder, now, horizon, agents=agents), shards):
                report.add(part)
    finally:
        agents.budgets.flush()  # once per agent, whatever the shards and pages its fires were in
    report.dead_lettered = deadletters.sweep(now)
    report.swept = sweeper.sweep(now)
    logger.info(
        "tick",
        extra={
            "dispatched": report.dispatched,
            "skipped": report.skipped,
            "over_budget": report.over_budget,
            "tasks": report.tasks,
            "stale": report.stale,
            "dead_lettered": report.dead_lettered,
            "swept": report.swept,
            "shards_busy": report.shards_busy,
        },
    )
    return report
