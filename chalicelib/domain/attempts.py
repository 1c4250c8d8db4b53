"""Attempts: how a worker takes a run for one try, and what it finds when it cannot.

Pure rules over `Run` records, shared by both storage adapters (`RunStore.claim_run` applies
them in one conditional write) and by the worker. A run's `attempt` counts every claim, a
lease takeover included, and never passes `max_attempts`: a takeover of a run whose attempts
are spent takes the lease without a new attempt (`AttemptsSpent`), and the worker fails it
`worker_lost` instead of executing it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.records import Run, RunStatus
from chalicelib.domain.timefmt import iso

# Error types of a run that ended without its pipeline failing (the step error types are in
# `execution/pipeline.py`). Documented in docs/runs.md.
WORKER_LOST = "worker_lost"  # the attempts are spent and the last one's worker stopped before recording it
CONCURRENCY_WAIT_TIMEOUT = "concurrency_wait_timeout"  # no concurrency slot came free in time
ENQUEUE_FAILED = "enqueue_failed"  # SQS did not accept the run's message
RUN_STUCK = "run_stuck"  # the stuck-run sweep found it queued, never claimed, long past its fire


@dataclass(frozen=True)
class Claimed:
    """The run is ours for this attempt (`run.attempt`), leased until `run.lease_until`."""

    run: Run


@dataclass(frozen=True)
class AttemptsSpent:
    """The run's last attempt lost its worker: we hold its lease (no new attempt) to fail it."""

    run: Run


@dataclass(frozen=True)
class AlreadyFinished:
    """A copy of a finished run: nothing to do."""

    run: Run


@dataclass(frozen=True)
class HeldElsewhere:
    """Another worker executes the run under a live lease; that worker records the outcome."""

    run: Run


@dataclass(frozen=True)
class LostRace:
    """The run changed between our read and our write (another claim, a skip): look again later."""


ClaimOutcome = Claimed | AttemptsSpent | AlreadyFinished | HeldElsewhere | LostRace


def standing(run: Run, now: datetime) -> AlreadyFinished | HeldElsewhere | None:
    """What a copy of a run finds without touching it: finished, executing elsewhere, or
    neither (None: it may be claimed)."""
    if run.status.final:
        return AlreadyFinished(run)
    if run.status is RunStatus.RUNNING and (run.lease_until or 0) > now.timestamp():
        return HeldElsewhere(run)
    return None


def ours(run: Run, claim: str) -> bool:
    """Whether the stored run holds the lease of this claim: a claim whose write landed but whose
    answer was lost (the SDK resent it and the resend failed its condition) is still ours."""
    return run.claim == claim and run.status is RunStatus.RUNNING


def take(run: Run, lease_until: int, now: datetime, claim: str | None = None) -> Run:
    """The run as claimed: its next attempt, running, leased until `lease_until`; or, when its
    attempts are spent, the same attempt with only the lease taken (see `spent`)."""
    if spent(run):
        return run.evolve(status=RunStatus.RUNNING, lease_until=lease_until, claim=claim)
    attempt = run.attempt + 1
    doc: dict[str, Any] = {
        **run.doc,
        "status": str(RunStatus.RUNNING),
        "attempt": attempt,
        "started_at": iso(now),
        "next_attempt_at": None,
        "finished_at": None,
    }
    if attempt == 1 and run.doc.get("scheduled_for"):
        # How late the first attempt started, at a precision started_at does not show.
        due = datetime.fromisoformat(str(run.doc["scheduled_for"]).replace("Z", "+00:00"))
        doc["start_lag_ms"] = int((now.timestamp() - due.timestamp()) * 1000)
    return run.evolve(status=RunStatus.RUNNING, lease_until=lease_until, doc=doc, claim=claim)


def claim(
    run: Run,
    seen: Run | None,
    lease_until: int,
    now: datetime,
    claim_id: str,
    *,
    create: Callable[[Run], bool],
    read: Callable[[], Run | None],
    replace: Callable[[Run, Run], bool],
) -> ClaimOutcome:
    """`RunStore.claim_run` over a store's three primitives: `create` (put if absent), `read`
    (consistent) and `replace(new, seen)` (only if the stored run is still as `seen`).

    Not read (`seen` None: a scheduled fire's first delivery), the run is created claimed if
    absent; otherwise it is read: a copy finds it finished or held, or our own create whose
    answer was lost finds its claim id. A claim that moves the record and fails its condition
    reads again for the same reason before it gives up (`LostRace`)."""
    if seen is None:
        fresh = take(run, lease_until, now, claim_id)
        if create(fresh):
            return Claimed(fresh)
        seen = read()
        if seen is None:
            return LostRace()
        if ours(seen, claim_id):
            return Claimed(seen)
    found = standing(seen, now)
    if found is not None:
        return found
    taken = take(seen, lease_until, now, claim_id)
    if not replace(taken, seen):
        again = read()
        if again is not None and ours(again, claim_id):  # it landed; its answer was lost
            return claimed(again, seen)
        return LostRace()
    return claimed(taken, seen)


def recorded(stored: Run | None, written: Run) -> bool:
    """Whether the store already holds `written`, an attempt's outcome saved under its claim: a
    fenced save that landed and whose answer was lost (the SDK resent it, the resend failed its
    fence) is done, not superseded. Taken for superseded, a `retrying` save would drop the run's
    message and leave it `retrying` with nothing to bring it back."""
    return (
        stored is not None
        and written.claim is not None
        and stored.claim == written.claim
        and stored.status is written.status
        and stored.attempt == written.attempt
        and stored.lease_until == written.lease_until
        and _as_stored(stored.doc) == _as_stored(written.doc)
    )


def _as_stored(doc: Mapping[str, Any]) -> Any:
    """A run document as storage gives it back (JSON: tuples come back as lists)."""
    return json.loads(json.dumps(doc, default=str))


def spent(run: Run) -> bool:
    """Every attempt the run may make has been claimed."""
    return run.attempt >= run.max_attempts


def claimed(taken: Run, seen: Run) -> Claimed | AttemptsSpent:
    return Claimed(taken) if taken.attempt > seen.attempt else AttemptsSpent(taken)


def ended(run: Run, status: RunStatus, now: datetime, **fields: Any) -> Run:
    """The run as finished (succeeded, failed or skipped) at `now`; `fields` go into its document."""
    doc = {**run.doc, **fields, "status": str(status), "finished_at": iso(now), "next_attempt_at": None}
    return run.evolve(status=status, doc=doc, lease_until=None)


def failed(run: Run, error_type: str, message: str, now: datetime) -> Run:
    return ended(run, RunStatus.FAILED, now, error={"type": error_type, "message": message[:500], "step": None})


def stuck(run: Run, now: datetime, *, wait: int, grace: int) -> str | None:
    """The error type the stuck-run sweep fails `run` with (`worker_lost` once an attempt was
    claimed, `run_stuck` before), or None: final, or a live system may still take it up.

    Its deadline is the instant its message is visible again at the latest: a running run's lease
    end (a crashed worker's message comes back within the queue's visibility timeout of its
    receive, which is before the lease end plus that timeout), a retrying run's next attempt
    (its message is hidden until then), a queued run's fire (its message is delayed until then).
    From there a delivery may wait `wait` for a concurrency slot (the worker fails it after
    that: measured from the fire or the retry's instant, both no later than this deadline), and
    `grace` covers a redelivery (the visibility timeout, 300 s) and a backlog on the queue. A
    record without the field its status needs is not judged."""
    if run.status.final:
        return None
    deadline: float | None
    if run.status is RunStatus.RUNNING:
        deadline = None if run.lease_until is None else float(run.lease_until)
    elif run.status is RunStatus.RETRYING:
        deadline = _instant(run.doc.get("next_attempt_at"))
    else:
        deadline = _instant(run.doc.get("scheduled_for"))
    if deadline is None or now.timestamp() <= deadline + wait + grace:
        return None
    return WORKER_LOST if run.attempt > 0 else RUN_STUCK


def _instant(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
