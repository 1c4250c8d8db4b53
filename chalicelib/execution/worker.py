"""Execution: the SQS worker that turns run messages into executed pipelines.

Per message (`_Delivery.work`, one named step each): never start early; drop copies of
finished runs and of runs executing elsewhere; skip runs fenced off by pause/cancel/a newer
schedule version; take the dedupe window; wait for a concurrency slot (a bounded wait: past
`concurrency_wait_timeout_seconds` the run fails); claim the run (`RunStore.claim_run`: one
conditional write, which is what makes a redelivered or re-dispatched message harmless);
execute; record the outcome, fenced against a newer attempt.

A failed attempt with retries left makes its own message visible again after the backoff
delay and is reported as a batch item failure; SQS then redelivers it. Attempts are counted
in the run record on every claim (a takeover of a crashed worker's run included), not from
ApproximateReceiveCount, which also counts concurrency waits and redeliveries; a run whose
attempts are spent and whose last worker was lost fails `worker_lost`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, assert_never

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.dispatch import budgets
from chalicelib.dispatch.completion import complete_if_last
from chalicelib.domain import attempts, retry
from chalicelib.domain.records import (
    Agent,
    AgentStatus,
    Definition,
    Run,
    RunStatus,
    SkipReason,
    Task,
    TaskStatus,
    Trigger,
)
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import iso
from chalicelib.execution import pipeline
from chalicelib.platform import metrics, wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import failure, logger
from chalicelib.services import agents, events
from chalicelib.store import counters, runs, stores
from chalicelib.store.ports import Slot

SLOT_WAIT_SECONDS = 2  # a run waiting for a concurrency slot looks again this soon
MAX_LEASE_SECONDS = 900  # the longest a Lambda can run
EARLY_WAIT_SECONDS = 1.0  # a message this early is held in the worker; earlier ones go back to the queue
MAX_RUN_DOC_BYTES = 350_000  # DynamoDB's item limit is 400 KB: past this, step outputs are dropped
# A template that may read the task: names it, or the whole context (`@`, a root wildcard).
_TASK_IN_TEMPLATE = re.compile(r"\{\{(?:(?!\}\}).)*?(\btask\b|@|\*)", re.DOTALL)


class ReportFailure(Exception):
    """Leave the message on the queue (its visibility was already set): SQS redelivers it."""


def handle_batch(event: dict[str, Any]) -> dict[str, Any]:
    """Process one SQS Lambda event; returns the partial batch failures (ReportBatchItemFailures).

    The records of a batch run concurrently (one thread each): fires due at the same instant
    arrive together, and one after the other the tenth would start ten pipelines late."""
    processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(async_process_partial_response(event=event, record_handler=_record_async, processor=processor))


async def _record_async(record: SQSRecord) -> None:
    await asyncio.to_thread(_record, record)


def _record(record: SQSRecord) -> None:
    try:
        receives = int(record.attributes.approximate_receive_count or 1)
        process(record.body, record.queue_url, record.receipt_handle, wiring.now_precise(), receives)
    except ReportFailure:
        raise
    except Exception as exc:
        logger.error("run_error", extra={"message_id": record.message_id, **failure(exc)})
        raise


def _visible_in(queue_url: str, receipt: str, seconds: int) -> None:
    wiring.client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=max(0, min(43_200, seconds))
    )


def _dead_letter(queue_url: str, body: str, reason: str) -> None:
    dlq = queue_url + "-dlq"
    wiring.client("sqs").send_message(
        QueueUrl=dlq,
        MessageBody=body,
        MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:256]}},
    )
    logger.error("run_dead_lettered", extra={"reason": reason})


def process(body: str, queue_url: str, receipt: str, now: datetime, receive_count: int = 1) -> str:
    """Handle one run message. Returns what happened (for logs and tests); raises
    ReportFailure to leave the message on the queue."""
    try:
        msg = RunMessage.from_json(body)
    except (ValueError, TypeError, KeyError) as e:
        _dead_letter(queue_url, body, f"undecodable run message: {e}")
        metrics.dead_lettered()
        return "dead_lettered"
    now = _wait_until_due(msg, now, queue_url, receipt)
    task = _read_task(msg)
    if task is None:
        logger.warning("run_for_missing_task", extra=_log_of(msg))
        return "no_task"
    return _Delivery(task, msg, queue_url, receipt, now, receive_count).work()


def _read_task(msg: RunMessage) -> Task | None:
    """An eventually consistent read (half a consistent one's cost) is enough for a run that goes
    ahead: the consistent read after its claim (`_Delivery._fenced_at_claim`) confirms it. A read
    that would drop or skip the run is confirmed by a consistent one: a write of the last second
    (a resume, a new schedule version) may be missing from it."""
    task = stores().tasks.get(msg.task_id, consistent=False)
    if task is None or skip_reason(task, msg) is not None:
        task = stores().tasks.get(msg.task_id)
    return task


def _wait_until_due(msg: RunMessage, now: datetime, queue_url: str, receipt: str) -> datetime:
    """Never start before the scheduled instant: an early message goes back to the queue, a
    fraction of a second early is waited out here (SQS delays are whole seconds)."""
    early = msg.scheduled_for - now.timestamp()
    if early > EARLY_WAIT_SECONDS:
        _visible_in(queue_url, receipt, math.ceil(early))
        raise ReportFailure("early")
    if early > 0:
        wiring.sleep(early)
        return wiring.now_precise()
    return now


def _log_of(msg: RunMessage) -> dict[str, Any]:
    return {"task_id": msg.task_id, "run_id": msg.run_id, "agent_id": msg.agent_id}


@dataclass
class _Delivery:
    """One delivery of a run message, worked in named steps (`work`)."""

    task: Task
    msg: RunMessage
    queue_url: str
    receipt: str
    now: datetime
    receive_count: int
    agent: Agent | None = None  # read after the claim, for pipelines that reach out (egress)

    @property
    def definition(self) -> Definition:
        return self.task.definition

    @cached_property
    def log(self) -> dict[str, Any]:
        return _log_of(self.msg)

    @cached_property
    def lease(self) -> int:
        return _lease_seconds(self.definition)

    def work(self) -> str:
        """Copies of finished or executing runs are dropped; fenced-off runs skipped; then the
        dedupe window, the concurrency slot, the claim, and what the claim found."""
        reason = skip_reason(self.task, self.msg)
        read = not self._claims_first(reason)
        seen = self._read() if read else None
        found = None if seen is None else attempts.standing(seen, self.now)
        if found is not None:
            return _copy_outcome(found)
        if reason is not None:
            return self._skip(seen, reason)
        run = seen or self._queued()
        if run.attempt == 0 and self.definition.dedupe_key and not self._take_dedupe(self.definition.dedupe_key):
            return self._skip(seen, SkipReason.DEDUPLICATED)
        flight: Slot | None = None
        if self.msg.in_flight > 0:
            flight = self._take_in_flight()
            if flight is None:
                return self._over_budget(seen)
        slot: Slot | None = None
        outcome: attempts.ClaimOutcome = attempts.LostRace()
        try:
            if self.definition.concurrency_key:
                slot = self._acquire_slot(self.definition.concurrency_key)
                if slot is None:
                    return self._wait_for_slot(seen, read)
            outcome = stores().runs.claim_run(
                run, seen=seen, lease_until=self._lease_until(), now=self.now, claim=secrets.token_hex(8)
            )
            return self._after_claim(outcome)
        finally:
            # A copy of a run executing elsewhere finds the slots already held in the run's name:
            # it must not release what the running copy still uses.
            ours = isinstance(outcome, attempts.Claimed | attempts.AttemptsSpent)
            for held in (slot, flight):
                if held is not None and (held.fresh or ours):
                    stores().leases.release_slot(held, self.msg.run_id)

    # ---- before the claim ----------------------------------------------------------------

    def _claims_first(self, reason: SkipReason | None) -> bool:
        """A scheduled fire's first delivery normally finds no record (its claim creates it), so
        it goes straight to the conditional create, and the record is read only if that fails.
        The rest read the record first: run_now and event runs are created `queued` by the API,
        a redelivery is a retry, a concurrency wait or a crash, and skips and dedupe windows
        depend on what the record says (finished, running elsewhere, first attempt or not)."""
        return (
            self.msg.trigger == Trigger.SCHEDULE
            and self.receive_count <= 1
            and reason is None
            and not self.definition.dedupe_key
        )

    def _read(self) -> Run | None:
        return runs.get(self.msg.task_id, self.msg.run_id, self.now)

    def _queued(self) -> Run:
        """The run's record as first created: queued, no attempt yet."""
        doc = runs.new_doc(
            self.msg, status="queued", max_attempts=self.definition.max_attempts, now=self.now, event=self._event()
        )
        return runs.new_run(self.msg, doc, self.now)

    def _event(self) -> Any:
        return None if self.msg.event_id is None else events.load(self.msg.agent_id, self.msg.event_id)

    def _skip(self, seen: Run | None, reason: SkipReason) -> str:
        if seen is None:
            doc = runs.new_doc(
                self.msg,
                status="skipped",
                skip_reason=str(reason),
                max_attempts=self.definition.max_attempts,
                now=self.now,
                event=self._event(),
            )
            if not runs.put_new(self.msg, doc, self.now):
                seen = self._read()  # it exists: a copy, or a record created meanwhile
                if seen is None or attempts.standing(seen, self.now) is not None:
                    return _copy_outcome(attempts.standing(seen, self.now)) if seen else "duplicate"
        if seen is not None:
            # A conditional write: someone who finished or claimed the run meanwhile keeps it.
            stores().runs.settle(seen, attempts.ended(seen, RunStatus.SKIPPED, self.now, skip_reason=str(reason)))
        if reason is not SkipReason.SUPERSEDED:
            complete_if_last(self.task, self.msg, self.now)
        metrics.run_finished("skipped")
        logger.info("run_skipped", extra={**self.log, "skip_reason": str(reason)})
        return str(reason)

    def _take_dedupe(self, key: str) -> bool:
        """One conditional write: the first run in the window takes the key."""
        window = int(self.definition.dedupe_window_seconds or 3600)
        return stores().leases.take_dedupe(
            self.msg.agent_id, key, self.msg.run_id, now=int(self.now.timestamp()), window=window
        )

    def _acquire_slot(self, key: str) -> Slot | None:
        """Concurrency slots are leases with expiry, so a crashed worker's slot frees itself."""
        limit = int(self.definition.concurrency_limit or 1)
        return stores().leases.acquire_slot(
            self.msg.agent_id, key, limit, self.msg.run_id, now=int(self.now.timestamp()), lease=self.lease
        )

    def _take_in_flight(self) -> Slot | None:
        """One of the agent's `runs_in_flight` slots (the ceiling the dispatcher stamped on the
        message), leased like a concurrency slot, so a crashed worker's slot frees itself."""
        return stores().leases.acquire_slot(
            budgets.IN_FLIGHT,
            self.msg.agent_id,
            self.msg.in_flight,
            self.msg.run_id,
            now=int(self.now.timestamp()),
            lease=self.lease,
        )

    def _over_budget(self, seen: Run | None) -> str:
        """Every in-flight slot of the agent is held: the run is skipped for good (not retried,
        not waiting), `budget_exceeded`, so an agent that floods its queue cannot hold it."""
        if seen is None:
            seen = self._read()  # a scheduled fire's first delivery has not read its record
            found = None if seen is None else attempts.standing(seen, self.now)
            if found is not None:
                return _copy_outcome(found)
        logger.warning("runs_over_budget", extra={**self.log, "skipped": 1, "at": "in_flight"})
        return self._skip(seen, SkipReason.BUDGET_EXCEEDED)

    def _wait_for_slot(self, seen: Run | None, read: bool) -> str:
        """No slot free: the run stays `queued` (a wait is not an attempt) and its message comes
        back soon, unless it has waited past the timeout: then it fails, rather than wait until
        SQS dead-letters its message and leaves it `queued` forever."""
        if not read:  # not read yet: a copy of a finished or running run must not wait
            seen = self._read()
            found = None if seen is None else attempts.standing(seen, self.now)
            if found is not None:
                return _copy_outcome(found)
        if seen is None:
            queued = self._queued()
            seen = queued if stores().runs.put_if_absent(queued) else self._read()
        timeout = settings().concurrency_wait_timeout_seconds
        if seen is not None and self.now.timestamp() - self._waiting_since(seen) > timeout:
            note = f"no slot of concurrency_key {self.definition.concurrency_key!r} came free within {timeout} s"
            if runs.fail_unclaimed(seen, attempts.CONCURRENCY_WAIT_TIMEOUT, note, self.now):
                complete_if_last(self.task, self.msg, self.now)
                metrics.run_finished("failed")
                logger.warning("run_failed", extra={**self.log, "error": {"type": attempts.CONCURRENCY_WAIT_TIMEOUT}})
                return attempts.CONCURRENCY_WAIT_TIMEOUT
        # Waits back off with the receive count, so a long queue of waiting runs stays far below
        # the queue's maxReceiveCount (1000) before the timeout ends the wait.
        _visible_in(self.queue_url, self.receipt, min(30, SLOT_WAIT_SECONDS + self.receive_count // 10))
        raise ReportFailure("waiting for a concurrency slot")

    def _waiting_since(self, run: Run) -> float:
        """A retry waits from its backoff's end, a first attempt from its scheduled instant."""
        nxt = run.doc.get("next_attempt_at")
        if run.status is RunStatus.RETRYING and isinstance(nxt, str):
            return datetime.fromisoformat(nxt.replace("Z", "+00:00")).timestamp()
        return float(self.msg.scheduled_for)

    def _lease_until(self) -> int:
        return int(self.now.timestamp()) + self.lease

    # ---- the claim and after ---------------------------------------------------------------

    def _after_claim(self, outcome: attempts.ClaimOutcome) -> str:
        match outcome:
            case attempts.Claimed(run=run):
                reason = self._fenced_at_claim()
                if reason is not None:
                    return self._skip_claimed(run, reason)
                if self.lease > 300:
                    _visible_in(self.queue_url, self.receipt, self.lease + 30)
                return self._execute(run)
            case attempts.AttemptsSpent(run=run):
                note = f"the worker of attempt {run.attempt} of {run.max_attempts} stopped before recording its outcome"
                done = self._finish(run, attempts.failed(run, attempts.WORKER_LOST, note, self.now))
                return attempts.WORKER_LOST if done == RunStatus.FAILED else done
            case attempts.AlreadyFinished() | attempts.HeldElsewhere():
                return _copy_outcome(outcome)
            case attempts.LostRace():
                _visible_in(self.queue_url, self.receipt, 30)
                raise ReportFailure("claimed elsewhere")
            case _:
                assert_never(outcome)

    def _fenced_at_claim(self) -> SkipReason | None:
        """The task read again (consistently) once the run is claimed: a pause, cancel or schedule
        change committed after the first read and before the claim stops the run here. One
        committed after this read finds the run claimed, and it runs (the pause applies to runs
        that have not started). A run that goes ahead executes the task as read here."""
        fresh = stores().tasks.get(self.msg.task_id)
        if fresh is None:
            return SkipReason.TASK_CANCELED
        reason = skip_reason(fresh, self.msg)
        if reason is not None:
            return reason
        self.task = fresh
        if _reaches(self.definition) or _emits(self.definition):
            # The agent is read for these pipelines anyway (their per-agent egress; an emit's
            # fan-out charges its run budget, and is handed this read): a revoked agent's run stops
            # here. A log-only pipeline reaches nothing and starts nothing: it skips the read.
            self.agent = stores().agents.get(self.msg.agent_id)
            if self.agent is not None and self.agent.status is AgentStatus.REVOKED:
                return SkipReason.AGENT_REVOKED
        return None

    def _skip_claimed(self, claimed: Run, reason: SkipReason) -> str:
        """Record a claimed run `skipped` without executing it (fenced like any final save)."""
        final = attempts.ended(claimed, RunStatus.SKIPPED, self.now, skip_reason=str(reason))
        if not stores().runs.finish(claimed, final):
            return self._superseded(claimed)
        if reason is not SkipReason.SUPERSEDED:
            complete_if_last(self.task, self.msg, self.now)
        metrics.run_finished("skipped")
        logger.info("run_skipped", extra={**self.log, "skip_reason": str(reason), "at": "claim"})
        return str(reason)

    def _execute(self, run: Run) -> str:
        msg, task = self.msg, self.task
        doc = dict(run.doc)
        attempt = run.attempt
        if attempt == 1:
            metrics.dispatch_lag(self.now.timestamp() - msg.scheduled_for)
        steps = _steps(self.definition)
        # Only HTTP steps sign requests: other pipelines skip the agent read on this hot path.
        signs = any(s.get("type") == "http" for s in steps)
        secret = agents.signing_secret(msg.agent_id) if signs else ""
        # The admin's per-agent egress (AWS targets, extra HTTP allow entries), read fresh and only
        # for a pipeline with a step that uses it; without it the executor opens no AWS target.
        egress = agents.egress_of(self.agent) if _reaches(self.definition) else pipeline.AgentEgress()
        payload = dict(self.definition.payload)
        ctx = pipeline.RunContext(
            task=_task_context(task, payload, self.now),
            run={k: doc.get(k) for k in ("id", "trigger", "attempt", "scheduled_for", "max_attempts")},
            input=doc.get("input"),
            event=doc.get("event"),
            task_id=msg.task_id,
            run_id=msg.run_id,
            attempt=attempt,
            signing_secret=secret,
            depth=msg.depth,
            chain=msg.chain,
            egress=egress,
        )
        started = time.monotonic()

        def emit(name: str, data: Any, step_id: str) -> str:
            key = f"{msg.run_id}|{step_id}"
            return events.emit(
                msg.agent_id,
                name,
                data,
                depth=msg.depth + 1,
                now=wiring.now(),
                key=key,
                at=msg.scheduled_for,
                chain=msg.chain,
                agent=self.agent,
            )

        result = pipeline.run_pipeline(payload, ctx, emit=emit, clock=lambda: wiring.now_precise().timestamp())
        finished = wiring.now()
        doc["steps"] = [
            {
                "id": s.id,
                "type": s.type,
                "status": s.status,
                "started_at": s.started_at,
                "duration_ms": s.duration_ms,
                "output": s.output,
                "output_truncated": s.output_truncated,
                "error": s.error,
            }
            for s in result.steps
        ]
        doc["duration_ms"] = int((time.monotonic() - started) * 1000)
        doc["error"] = result.error
        if result.error is not None and result.retryable and attempt < run.max_attempts:
            return self._retry_later(run, doc, result.error, finished)
        status = RunStatus.SUCCEEDED if result.error is None else RunStatus.FAILED
        return self._finish(run, attempts.ended(run.evolve(doc=_fit(doc)), status, finished))

    def _retry_later(self, run: Run, doc: dict[str, Any], error: dict[str, Any], finished: datetime) -> str:
        delay = retry.backoff_seconds(self.definition.backoff_strategy, run.attempt)
        doc.update(status=str(RunStatus.RETRYING), next_attempt_at=iso(finished + timedelta(seconds=delay)))
        retrying = run.evolve(status=RunStatus.RETRYING, doc=_fit(doc), lease_until=None)
        if not stores().runs.save_attempt(run, retrying):
            return self._superseded(run)
        _visible_in(self.queue_url, self.receipt, delay)
        metrics.retry_scheduled()
        # The error's type and step, not its message: that may quote header values or responses.
        brief = {"type": error["type"], "step": error.get("step")}
        logger.info("run_retrying", extra={**self.log, "attempt": run.attempt, "delay_s": delay, "error": brief})
        raise ReportFailure("retrying")

    def _finish(self, claimed: Run, final: Run) -> str:
        """Count the run, then save its final record, fenced against a newer attempt."""
        if not _still_ours(claimed):
            return self._superseded(claimed)
        # Counted before the record is final: a crash in between leaves the run to its retry, whose
        # count finds this one (counters.py); once the record is final, no copy counts it again.
        counters.count(final.task_id, final.run_id, str(final.status), final.doc["finished_at"])
        if not stores().runs.finish(claimed, final):
            return self._superseded(claimed)
        finished = wiring.now()
        complete_if_last(self.task, self.msg, finished)
        metrics.run_finished(str(final.status))
        logger.info(
            "run_finished",
            extra={
                **self.log,
                "status": str(final.status),
                "attempt": final.attempt,
                "duration_ms": final.doc.get("duration_ms"),
            },
        )
        return str(final.status)

    def _superseded(self, claimed: Run) -> str:
        """This worker overran its lease and another took the run over: its outcome is dropped
        (the newer attempt records its own)."""
        logger.warning("run_attempt_superseded", extra={**self.log, "attempt": claimed.attempt})
        return "superseded_attempt"


def _copy_outcome(found: attempts.ClaimOutcome | None) -> str:
    """What a copy of a run does without touching it: drop a duplicate of a finished run, and
    leave a run executing elsewhere (live lease) to that copy, which records the outcome."""
    return "in_progress" if isinstance(found, attempts.HeldElsewhere) else "duplicate"


def _still_ours(claimed: Run) -> bool:
    """Whether the attempt is still this worker's. Within its lease it is (nobody takes a live
    lease over); past it, the record is read again, so that a worker that was taken over does
    not count a run whose newer attempt will count it (the fenced save alone would come after
    the count)."""
    if wiring.now().timestamp() <= (claimed.lease_until or 0):
        return True
    stored = stores().runs.get(claimed.task_id, claimed.run_id)
    return (
        stored is not None
        and attempts.standing(stored, wiring.now()) is None
        and (
            stored.status,
            stored.attempt,
            stored.lease_until,
        )
        == (RunStatus.RUNNING, claimed.attempt, claimed.lease_until)
    )


def skip_reason(task: Task, msg: RunMessage) -> SkipReason | None:
    if task.status is TaskStatus.CANCELED:
        return SkipReason.TASK_CANCELED
    if msg.trigger == Trigger.RUN_NOW:
        return None  # run_now is allowed while paused and is not tied to a schedule version
    if task.status is TaskStatus.PAUSED:
        return SkipReason.TASK_PAUSED
    if msg.trigger == Trigger.SCHEDULE and msg.schedule_version != task.schedule_version:
        return SkipReason.SUPERSEDED
    return None


_EGRESS_STEPS = frozenset({"http", "lambda", "sqs", "sns", "eventbridge"})


def _reaches(definition: Definition) -> bool:
    return any(s.get("type") in _EGRESS_STEPS for s in _steps(definition))


def _emits(definition: Definition) -> bool:
    return any(s.get("type") == "emit" for s in _steps(definition))


def _steps(definition: Definition) -> list[dict[str, Any]]:
    return list(definition.payload.get("steps") or [])


def _lease_seconds(definition: Definition) -> int:
    steps = _steps(definition)
    return min(MAX_LEASE_SECONDS, sum(int(s.get("timeout_seconds") or 30) for s in steps) + 30)


def _fit(doc: dict[str, Any]) -> dict[str, Any]:
    """Keep the record under DynamoDB's item limit: past MAX_RUN_DOC_BYTES, drop step outputs."""
    if len(json.dumps(doc, default=str)) > MAX_RUN_DOC_BYTES:
        for s in doc.get("steps") or []:
            s["output"], s["output_truncated"] = None, True
    return doc


def _task_context(task: Task, payload: Any, now: datetime) -> dict[str, Any]:
    """The task as templates see it, counters as of the run's start; only built (one read of
    the counters) for pipelines whose templates may read it."""
    if not _TASK_IN_TEMPLATE.search(json.dumps(payload)):
        return {}
    from chalicelib.services import tasks as tasks_mod  # the representation lives with the task routes

    return tasks_mod.represent(task, now, counters.read(task.task_id))
