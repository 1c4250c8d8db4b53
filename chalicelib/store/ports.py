"""The storage ports: a few verbs per store, named for what they guarantee, taking and
returning domain records (`chalicelib.domain.records`) and outcomes, never storage items or
botocore errors. Two adapters implement every port: DynamoDB (`store/dynamo`, PynamoDB) and
in memory (`store/memory`), and one contract suite (`tests/store`) runs against both.

A conditional write is a verb that says what it guarantees (`put_if_absent`, `claim_run`,
`acquire_shard`) and answers with an outcome; only an unexpected storage failure raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain import attempts
from chalicelib.domain.counting import Counters
from chalicelib.domain.records import Agent, Event, Run, Schedule, Task, TaskStatus

# ---- tasks (shared by services, dispatch and execution) -------------------------------------


@dataclass(frozen=True)
class TaskPage:
    """A page of a listing, newest first; `more` says whether tasks follow it."""

    tasks: list[Task]
    more: bool


class TaskStore(Protocol):
    def get(self, task_id: str, *, consistent: bool = True) -> Task | None:
        """A consistent read (`consistent=False`: an eventually consistent one, half the read
        cost, which may miss a write of the last second); None when absent."""
        ...

    def get_many(self, task_ids: Iterable[str]) -> dict[str, Task]:
        """The tasks that exist among `task_ids`, by id (consistent reads)."""
        ...

    def create(self, task: Task, *, quota: int) -> bool:
        """Store a new task and count it against its agent's quota, as one guarantee: False (and
        nothing stored) when the agent is not active or already has `quota` tasks. A task id
        that exists already is never overwritten (an error: ids are UUID4)."""
        ...

    def save_if_unchanged(self, read: Task, new: Task) -> Task | None:
        """Write `new` as the next version of `read` (`version` = read's + 1) only if the stored
        task is still as `read` in everything others write (version, due_at, status,
        schedule_version): the saved task, or None when it changed since (re-read and retry)."""
        ...

    def list_by_agent(
        self,
        agent_id: str | None,
        *,
        status: TaskStatus | None = None,
        kind: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """An agent's tasks (every agent's: None), newest first, filtered by status and kind."""
        ...

    def by_event_key(self, event_keys: Sequence[str]) -> list[Task]:
        """The tasks whose `event_key` is one of these, oldest first."""
        ...


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------


class RunStore(Protocol):
    """Run records. Every write is conditional on what the writer saw, so a redelivered or
    re-dispatched copy of a run, or a worker that overran its lease, never overwrites a newer
    state: a run is created once, claimed by one worker per attempt (`claim_run`), and its
    outcome is saved only by the worker holding that attempt (`save_attempt`, `finish`)."""

    def get(self, task_id: str, run_id: str) -> Run | None:
        """A consistent read; None when absent (expired records included: readers filter)."""
        ...

    def put_if_absent(self, run: Run) -> bool:
        """Create the record; False (nothing written) when the run exists already."""
        ...

    def claim_run(
        self, run: Run, *, seen: Run | None, lease_until: int, now: datetime, claim: str
    ) -> attempts.ClaimOutcome:
        """Take the run for its next attempt (`attempts.take`), leased until `lease_until` under
        `claim` (a fresh id per try): a write that landed but whose answer was lost, so that the
        resent write failed its condition, is recognised by it and answers `Claimed`.

        `seen` is the record as the caller read it; None when not read (a scheduled fire's first
        delivery): then `run` (queued) is created claimed if absent, and only if it exists is it
        read. `Claimed`: ours. `AttemptsSpent`: a takeover of a run with no attempt left (its
        lease is ours, to fail it). `AlreadyFinished` / `HeldElsewhere`: a copy. `LostRace`: the
        record changed since `seen`."""
        ...

    def save_attempt(self, claimed: Run, retrying: Run) -> bool:
        """Record a failed attempt with retries left (`retrying`, lease released), fenced: only
        if the stored run is still `claimed` (running, at that attempt, under that lease).
        False: a newer attempt took the run over (this worker overran its lease). True as well
        when the store already holds exactly this outcome under this claim: a save that landed
        and whose answer was lost, resent by the SDK (`attempts.recorded`)."""
        ...

    def finish(self, claimed: Run, final: Run) -> bool:
        """Save the final record (succeeded / failed), fenced like `save_attempt`."""
        ...

    def settle(self, seen: Run, final: Run) -> bool:
        """Record a run nobody executes as final (skipped; failed before an attempt), only if it
        is still as `seen` (status, attempt, lease)."""
        ...

    def newest_first(self, task_id: str, *, before: str | None, limit: int, now: datetime) -> RunPage:
        """A page of the task's runs, newest first (descending run id), those with a run id below
        `before` when given; runs past retention at `now` are left out (TTL deletes lazily)."""
        ...


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    more: bool  # runs follow this page


@dataclass(frozen=True)
class SweepPage:
    """A page of the runs table in storage order; `next` resumes after it (None: the table's end,
    and the next pass starts over)."""

    runs: list[Run]
    next: str | None


class RunSweep(Protocol):
    """The stuck-run sweep's rolling pass over every run record (`dispatch/sweeper.py`): one
    bounded page a tick, resumed from a cursor kept with the shard leases. Reads only: no index
    and no write per run."""

    def page(self, cursor: str | None, *, limit: int) -> SweepPage:
        """One eventually consistent page of at most `limit` runs (DynamoDB: one Scan request,
        which also stops at 1 MB) after `cursor` (None: from the start). Expired records may be
        among them (readers filter)."""
        ...

    def cursor(self) -> str | None:
        """Where the pass stands (None: at the start)."""
        ...

    def keep_cursor(self, cursor: str | None) -> None:
        """Store where the next page starts (None: the start)."""
        ...


class StatsStore(Protocol):
    """A task's run counters (`store/counters.py` has the design and its one bound)."""

    def count(self, task_id: str, run_id: str, status: str, finished_at: str) -> bool:
        """Add a finished run once: False when its mark is among the recent ones (counted already).
        `last_run_*` moves only forward in `finished_at`."""
        ...

    def read(self, task_id: str) -> Counters:
        """Consistent; zeros before the task's first finished run. Never writes."""
        ...

    def read_many(self, task_ids: Iterable[str]) -> dict[str, Counters]: ...

    def recent(self, task_id: str) -> list[str]:
        """The marks remembered, oldest first (for tests of the bound)."""
        ...


@dataclass(frozen=True)
class Slot:
    """A concurrency slot held by a run. `fresh`: taken now (False: the run already held it,
    e.g. a copy of a run executing elsewhere, which must not release it)."""

    key: str
    fresh: bool


class LeaseStore(Protocol):
    """Dedupe windows (`dedupe#<agent>#<key>`) and concurrency slots (`conc#<agent>#<key>#<i>`):
    leases with an expiry, one conditional write each, so a crashed holder frees them by itself."""

    def take_dedupe(self, agent_id: str, key: str, holder: str, *, now: int, window: int) -> bool:
        """Take the key for `window` seconds if free, expired, or already `holder`'s."""
        ...

    def acquire_slot(self, agent_id: str, key: str, limit: int, holder: str, *, now: int, lease: int) -> Slot | None:
        """One of the key's `limit` slots for `lease` seconds: a free or expired one, or the one
        `holder` holds already. None when all are held by others."""
        ...

    def release_slot(self, slot: Slot, holder: str) -> None:
        """Free the slot if `holder` still holds it (otherwise nothing happens)."""
        ...


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------


def slot_of(fire: int, task_id: str) -> str:
    """A due entry's sort key: by fire instant, then task id."""
    return f"{fire:010d}#{task_id}"


@dataclass(frozen=True)
class DueEntry:
    """One pending fire of a running schedule, in its task's shard of the `due` table."""

    shard: str
    task_id: str
    fire: int  # epoch seconds
    schedule_version: int

    @property
    def slot(self) -> str:
        return slot_of(self.fire, self.task_id)


@dataclass(frozen=True)
class DueFire:
    """A task's pending fire with what planning its dispatch needs: a (re)started schedule
    from the task's sparse `due` index (which projects these fields only, not the whole
    task), or a running schedule's due-table entry joined with its task."""

    task_id: str
    agent_id: str
    schedule: Schedule
    schedule_version: int
    priority: int
    due_at: int


@dataclass(frozen=True)
class Acquired:
    """The shard is ours until `until` (epoch seconds)."""

    until: int


@dataclass(frozen=True)
class HeldElsewhere:
    """Another tick holds the shard's lease until `until` (None: not known)."""

    until: int | None = None


class DueStore(Protocol):
    """The `due` table: one pending fire per running schedule, never moved or deleted (a TTL
    removes old entries); each shard's watermark says how far the tick has worked."""

    def add(self, entry: DueEntry) -> bool:
        """Write the entry unless its slot holds a newer schedule version (two versions of a
        schedule can name the same slot; a tick working from the old one must not overwrite
        the new one's entry). Idempotent. False: a newer version holds the slot."""
        ...

    def read(self, shard: str, until: int, after: str | None = None) -> Iterator[DueEntry]:
        """A consistent read of the shard's entries with fires up to `until` (inclusive), in
        slot order, after the slot `after` (exclusive)."""
        ...


class ShardLeases(Protocol):
    """Which tick works a due shard, and how far it has worked (its watermark)."""

    def acquire_shard(self, shard: str, holder: str, now: int, seconds: int) -> Acquired | HeldElsewhere:
        """Take the shard's lease for `seconds` if nobody holds it, its lease ran out, or `holder`
        holds it already (its own write, resent by the SDK after its answer was lost)."""
        ...

    def release_shard(self, shard: str, holder: str) -> None:
        """Give the lease back, if `holder` still holds it (otherwise nothing happens)."""
        ...

    def watermark(self, shard: str) -> str | None:
        """The last slot the tick has dispatched in the shard (consistent); None: none yet."""
        ...

    def advance_watermark(self, shard: str, through: str) -> bool:
        """Move the watermark to `through`, only forward. False: it already was there or past."""
        ...


class DueTasks(Protocol):
    """The task-side verbs the tick needs: the sparse `due` index of (re)started schedules,
    and the conditional writes that settle a dispatched fire (whole tasks: TaskStore.get_many)."""

    def due_tasks(self, shard: str, until: int) -> Iterator[DueFire]:
        """The shard's (re)started schedules whose first fire is at or before `until`, in order."""
        ...

    def advance_due(self, task_id: str, due_at: int, schedule_version: int, *, complete: bool = False) -> bool:
        """The start at `due_at` was dispatched: the task leaves the due index (its next fire is
        in the due table), and with `complete` it is completed. Only if its `due_at` and
        schedule version are still these; False otherwise (it changed meanwhile)."""
        ...

    def pause_with_error(self, task_id: str, schedule_version: int, error: str) -> bool:
        """Pause an active task whose schedule cannot be computed, with `schedule_error`, and
        take it out of the due index. Only if still active at this schedule version."""
        ...

    def complete(self, task_id: str, schedule_version: int) -> bool:
        """Nothing is left of the schedule: the task completes and leaves the due index. Only
        if still active at this schedule version."""
        ...


# ---- agents, events, idempotency keys (services) --------------------------------------------


class AgentStore(Protocol):
    def get(self, agent_id: str) -> Agent | None:
        """A consistent read; None when absent."""
        ...

    def put_if_absent(self, agent: Agent) -> bool: ...

    def all(self) -> list[Agent]: ...

    def revoke(self, agent_id: str) -> Agent | None:
        """Mark the agent revoked: the agent as it is now, None when absent."""
        ...

    def replace_secret(self, agent_id: str, expected: str, new: str) -> bool:
        """Set the signing secret to `new` only if it is still `expected`."""
        ...

    def set_egress(self, agent_id: str, aws_targets: Sequence[str], http_allow: Sequence[str]) -> bool:
        """Replace both egress lists; False when the agent is absent."""
        ...

    def release_task_slot(self, agent_id: str) -> None:
        """One task fewer against the agent's quota (never below zero)."""
        ...

    def set_budget(self, agent_id: str, values: Mapping[str, int | None]) -> Agent | None:
        """Replace the agent's budget fields (`domain.budgets.FIELDS`; None removes one): the
        agent as it is now, None when absent."""
        ...

    # Rate-limit buckets (GCRA, `services/ratelimit.py`): a bucket is one number per agent and
    # kind, its theoretical arrival time in epoch milliseconds. Each verb is one conditional
    # write on an existing agent, exact across concurrent requests.

    def restart_bucket(self, agent_id: str, bucket: str, tat_ms: int, *, idle_before_ms: int) -> bool:
        """Set the bucket to `tat_ms` if it is unset or earlier than `idle_before_ms`."""
        ...

    def advance_bucket(self, agent_id: str, bucket: str, step_ms: int, *, low_ms: int, high_ms: int) -> bool:
        """Add `step_ms` to the bucket if it lies within [low_ms, high_ms]."""
        ...

    def bucket(self, agent_id: str, bucket: str) -> int | None:
        """The bucket's value (None: unset, or no such agent)."""
        ...

    def get_with_bucket(self, agent_id: str, bucket: str) -> tuple[Agent | None, int | None]:
        """`get` and `bucket` in one consistent read (the tick reads both for each agent)."""
        ...

    def take_up_to(self, agent_id: str, bucket: str, n: int, *, now_ms: int, step_ms: int, burst: int) -> int:
        """Spend up to `n` of the bucket (emission interval `step_ms`, `burst`) at once: how many
        it admitted (`domain.budgets.room`, 0 when it is empty or the agent is gone). Exact across
        concurrent takers; one conditional write when the bucket is idle or has room for all `n`."""
        ...


class EventStore(Protocol):
    def put(self, event: Event) -> None: ...

    def get(self, agent_id: str, event_id: str) -> Event | None: ...

    def charge_chain(self, agent_id: str, chain: str, runs: int, *, limit: int, expires_at: datetime) -> bool:
        """Add `runs` to the agent's event chain `chain` (one conditional write, created at 0),
        only if its total stays within `limit`. False (nothing added): it would not. The
        counter lives until `expires_at`."""
        ...


@dataclass(frozen=True)
class KeyClaim:
    """A claimed key (an Idempotency-Key, an AWS event id): what the claimer stored with it,
    and the first response once it was kept."""

    key: str
    value: Mapping[str, Any]
    expires_at: datetime | None
    response: Mapping[str, Any] | None = None


class IdempotencyStore(Protocol):
    def claim(self, key: str, value: Mapping[str, Any], *, expires_at: datetime, now: datetime) -> bool:
        """Take `key` if nobody holds it (or the holder's claim expired before `now`)."""
        ...

    def get(self, key: str, *, now: datetime) -> KeyClaim | None:
        """The live claim of `key`; None when absent or expired before `now`."""
        ...

    def keep_response(self, key: str, response: Mapping[str, Any]) -> bool:
        """Keep the first response with a claim; False when the claim is gone."""
        ...

    def release(self, key: str) -> None:
        """Give the key up (the claimer failed: the next request may try again)."""
        ...
