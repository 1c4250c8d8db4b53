"""Execution: the SQS worker that turns run messages into executed pipelines.

Per message: never start early; drop duplicates of finished runs; skip runs fenced off by
pause/cancel/a newer schedule version; apply the dedupe window and the concurrency slots;
claim the run record (one conditional write, which is what makes a redelivered or
re-dispatched message harmless); execute; record the outcome. A failed attempt with
retries left makes its own message visible again after the backoff delay and is reported
as a batch item failure; SQS then redelivers it. Attempts are counted in the run record,
not from ApproximateReceiveCount, which also counts concurrency waits and redeliveries.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import dispatch
from chalicelib.domain import retry, schedules
from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.timefmt import from_epoch, iso
from chalicelib.execution import pipeline
from chalicelib.platform import metrics, wiring
from chalicelib.platform.log import failure, logger
from chalicelib.services import agents, events, runs
from chalicelib.services.runs import RunMessage
from chalicelib.store import counters
from chalicelib.store.models import KeyModel, RunModel, TaskModel

FINAL = ("succeeded", "failed", "skipped")
SLOT_WAIT_SECONDS = 2  # a run waiting for a concurrency slot looks again this soon
MAX_LEASE_SECONDS = 900  # the longest a Lambda can run
EARLY_WAIT_SECONDS = 1.0  # a message this early is held in the worker; earlier ones go back to the queue
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
    log = {"task_id": msg.task_id, "run_id": msg.run_id, "agent_id": msg.agent_id}
    early = msg.scheduled_for - now.timestamp()
    if early > EARLY_WAIT_SECONDS:  # never start before the scheduled instant
        _visible_in(queue_url, receipt, math.ceil(early))
        raise ReportFailure("early")
    if early > 0:  # SQS delays are whole seconds: wait out the fraction rather than a second more
        wiring.sleep(early)
        now = wiring.now_precise()
    try:
        task = TaskModel.get(msg.task_id, consistent_read=True)
    except DoesNotExist:
        logger.warning("run_for_missing_task", extra=log)
        return "no_task"
    spec = task.spec or {}
    max_attempts = int(spec.get("max_retries", 3)) + 1
    reason = skip_reason(task, msg)
    # Claim first: a scheduled fire's first delivery normally finds no record (its claim creates
    # it), so it goes straight to the conditional Put, and the record is read only if that fails.
    # The rest read the record first: run_now and event runs are created `queued` by the API, a
    # redelivery is a retry, a concurrency wait or a crash, and skips and dedupe windows depend
    # on what the record says (finished, running elsewhere, first attempt or not).
    claim_first = msg.trigger == "schedule" and receive_count <= 1 and reason is None and not spec.get("dedupe_key")
    rec = None if claim_first else runs.get(msg.task_id, msg.run_id, now)
    settled = _settled(rec, now)
    if settled is not None:
        return settled
    if reason is not None:
        _skip(msg, rec, reason, max_attempts, now)
        if reason != "superseded":
            complete_if_last(task, msg, now)
        metrics.run_finished("skipped")
        logger.info("run_skipped", extra={**log, "skip_reason": reason})
        return reason
    doc = (
        rec.doc
        if rec is not None
        else runs.new_doc(msg, status="queued", max_attempts=max_attempts, now=now, event=_event_of(msg))
    )
    if int(doc.get("attempt") or 0) == 0 and spec.get("dedupe_key"):
        if not _dedupe(msg, spec["dedupe_key"], int(spec.get("dedupe_window_seconds") or 3600), now):
            _skip(msg, rec, "deduplicated", max_attempts, now)
            complete_if_last(task, msg, now)
            metrics.run_finished("skipped")
            return "deduplicated"
    slot, fresh_slot = None, False
    if spec.get("concurrency_key"):
        slot, fresh_slot = _acquire_slot(
            msg, spec["concurrency_key"], int(spec.get("concurrency_limit") or 1), _lease_seconds(spec), now
        )
        if slot is None:
            if claim_first:  # not read yet: a copy of a finished or running run must not wait
                rec = runs.get(msg.task_id, msg.run_id, now)
                settled = _settled(rec, now)
                if settled is not None:
                    return settled
            if rec is None:
                runs.put_new(msg, doc, now)
            # Waits back off with the receive count, so a long queue of waiting runs stays far
            # below the queue's maxReceiveCount (1000) and is never dead-lettered.
            _visible_in(queue_url, receipt, min(30, SLOT_WAIT_SECONDS + receive_count // 10))
            raise ReportFailure("waiting for a concurrency slot")
    claimed = None
    try:
        outcome = _claim(msg, rec, doc, _lease_seconds(spec), now)
        if isinstance(outcome, str):  # the claim's failed Put found the run finished or running elsewhere
            return outcome
        claimed = outcome
        if claimed is None:  # another worker holds a live claim on this run
            _visible_in(queue_url, receipt, 30)
            raise ReportFailure("claimed elsewhere")
        lease = _lease_seconds(spec)
        if lease > 300:
            _visible_in(queue_url, receipt, lease + 30)
        return _execute(task, msg, claimed, queue_url, receipt, now, log)
    finally:
        # A duplicate copy of a run that is executing elsewhere finds the slot already held in
        # the run's name: it must not release what the running copy still uses.
        if slot is not None and (claimed is not None or fresh_slot):
            _release_slot(slot, msg.run_id)


def _settled(rec: RunModel | None, now: datetime) -> str | None:
    """What a copy of a run does without touching it: drop a duplicate of a finished run, and
    leave a run executing elsewhere (live lease) to that copy, which records the outcome."""
    if rec is None:
        return None
    if rec.status in FINAL:
        return "duplicate"
    if rec.status == "running" and (rec.lease_until or 0) > now.timestamp():
        return "in_progress"
    return None


def skip_reason(task: TaskModel, msg: RunMessage) -> str | None:
    if task.status == "canceled":
        return "task_canceled"
    if msg.trigger == "run_now":
        return None  # run_now is allowed while paused and is not tied to a schedule version
    if task.status == "paused":
        return "task_paused"
    if msg.trigger == "schedule" and msg.schedule_version != task.schedule_version:
        return "superseded"
    return None


def _event_of(msg: RunMessage) -> Any:
    if msg.event_id is None:
        return None
    return events.load(msg.agent_id, msg.event_id)


_EGRESS_STEPS = frozenset({"http", "lambda", "sqs", "sns", "eventbridge"})


def _steps(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list((spec.get("payload") or {}).get("steps") or [])


def _lease_seconds(spec: dict[str, Any]) -> int:
    steps = _steps(spec)
    return min(MAX_LEASE_SECONDS, sum(int(s.get("timeout_seconds") or 30) for s in steps) + 30)


def _skip(msg: RunMessage, rec: RunModel | None, reason: str, max_attempts: int, now: datetime) -> None:
    if rec is None:
        doc = runs.new_doc(
            msg,
            status="skipped",
            skip_reason=reason,
            max_attempts=max_attempts,
            now=now,
            event=_event_of(msg) if msg.event_id else None,
        )
        if runs.put_new(msg, doc, now):
            return
        rec = runs.get(msg.task_id, msg.run_id, now)
        if rec is None or rec.status in FINAL:
            return
    doc = {**rec.doc, "status": "skipped", "skip_reason": reason, "finished_at": iso(now), "next_attempt_at": None}
    try:
        rec.update(
            actions=[RunModel.doc.set(doc), RunModel.status.set("skipped")], condition=RunModel.status == rec.status
        )
    except UpdateError:
        pass  # someone else finished or claimed it meanwhile


def _dedupe(msg: RunMessage, key: str, window: int, now: datetime) -> bool:
    """One conditional write: the first run in the window takes the key."""
    k = f"dedupe#{msg.agent_id}#{key}"
    rec = KeyModel(
        k, holder=msg.run_id, until=int(now.timestamp()) + window, expires_at=now + timedelta(seconds=window)
    )
    try:
        rec.save(
            condition=KeyModel.key.does_not_exist()
            | (KeyModel.until <= int(now.timestamp()))
            | (KeyModel.holder == msg.run_id)
        )
    except PutError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _acquire_slot(msg: RunMessage, key: str, limit: int, lease: int, now: datetime) -> tuple[str | None, bool]:
    """Concurrency slots are leases with expiry, so a crashed worker's slot frees itself.
    Returns (slot key, fresh): fresh is False when the run already held that slot."""
    t = int(now.timestamp())
    for held in (False, True):
        for i in range(limit):
            k = f"conc#{msg.agent_id}#{key}#{i}"
            slot = KeyModel(k, holder=msg.run_id, until=t + lease, expires_at=now + timedelta(seconds=lease + 3600))
            cond = (KeyModel.holder == msg.run_id) if held else (KeyModel.key.does_not_exist() | (KeyModel.until < t))
            try:
                slot.save(condition=cond)
                return k, not held
            except PutError as e:
                if e.cause_response_code != "ConditionalCheckFailedException":
                    raise
    return None, False


def _release_slot(key: str, run_id: str) -> None:
    try:
        KeyModel(key).delete(condition=KeyModel.holder == run_id)
    except Exception:  # noqa: BLE001 - the lease expires by itself
        pass


def _claim(
    msg: RunMessage, rec: RunModel | None, doc: dict[str, Any], lease: int, now: datetime
) -> RunModel | str | None:
    """Take the run for one attempt: create it, or move it from queued/retrying (or from a
    running claim whose lease expired: a crashed worker) to running. Returns the claimed
    record; None if another worker holds a live claim; "duplicate" / "in_progress" when the
    create found the run finished or executing elsewhere."""
    t = int(now.timestamp())
    if rec is None:
        fresh = RunModel(
            msg.task_id,
            msg.run_id,
            agent_id=msg.agent_id,
            doc=_claimed(msg, doc, now),
            status="running",
            lease_until=t + lease,
            expires_at=runs.expiry(now),
        )
        try:
            fresh.save(condition=RunModel.run_id.does_not_exist())
            return fresh
        except PutError as e:
            if e.cause_response_code != "ConditionalCheckFailedException":
                raise
        # The record exists (a redelivered or re-dispatched copy, a fire recorded up front):
        # only now is it read. PynamoDB 6.1's save cannot ask for ALL_OLD on a failed condition.
        rec = runs.get(msg.task_id, msg.run_id, now)
        if rec is None:
            return None
        settled = _settled(rec, now)
        if settled is not None:
            return settled
    if rec.status == "running" and (rec.lease_until or 0) > t:
        return None
    cond = RunModel.status == rec.status
    cond &= (
        RunModel.lease_until.does_not_exist() if rec.lease_until is None else (RunModel.lease_until == rec.lease_until)
    )
    try:
        rec.update(
            actions=[
                RunModel.doc.set(_claimed(msg, rec.doc, now)),
                RunModel.status.set("running"),
                RunModel.lease_until.set(t + lease),
            ],
            condition=cond,
        )
    except UpdateError as e:
        if e.cause_response_code == "ConditionalCheckFailedException":
            return None
        raise
    return rec


def _claimed(msg: RunMessage, doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The run document for the next attempt."""
    attempt = int(doc.get("attempt") or 0) + 1
    new = {
        **doc,
        "status": "running",
        "attempt": attempt,
        "started_at": iso(now),
        "next_attempt_at": None,
        "finished_at": None,
    }
    if attempt == 1:  # how late the first attempt started, at a precision started_at does not show
        new["start_lag_ms"] = int((now.timestamp() - msg.scheduled_for) * 1000)
    return new


def _execute(
    task: TaskModel, msg: RunMessage, rec: RunModel, queue_url: str, receipt: str, now: datetime, log: dict[str, Any]
) -> str:
    doc = dict(rec.doc)
    attempt = int(doc["attempt"])
    if attempt == 1:
        metrics.dispatch_lag(now.timestamp() - msg.scheduled_for)
    # Only HTTP steps sign requests: other pipelines skip the agent read on this hot path.
    signs = any(s.get("type") == "http" for s in _steps(task.spec or {}))
    secret = agents.signing_secret(msg.agent_id) if signs else ""
    # The admin's per-agent egress (AWS targets, extra HTTP allow entries), read fresh and only
    # for a pipeline with a step that uses it; without it the executor opens no AWS target.
    reaches = any(s.get("type") in _EGRESS_STEPS for s in _steps(task.spec or {}))
    egress = agents.egress_for_run(msg.agent_id) if reaches else pipeline.AgentEgress()
    payload = (task.spec or {}).get("payload") or {}
    ctx = pipeline.RunContext(
        task=_task_context(task, payload, now),
        run={k: doc.get(k) for k in ("id", "trigger", "attempt", "scheduled_for", "max_attempts")},
        input=doc.get("input"),
        event=doc.get("event"),
        task_id=msg.task_id,
        run_id=msg.run_id,
        attempt=attempt,
        signing_secret=secret,
        depth=msg.depth,
        egress=egress,
    )
    started = time.monotonic()

    def emit(name: str, data: Any, step_id: str) -> str:
        key = f"{msg.run_id}|{step_id}"
        return events.emit(
            msg.agent_id, name, data, depth=msg.depth + 1, now=wiring.now(), key=key, at=msg.scheduled_for
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
    max_attempts = int(doc.get("max_attempts") or 1)
    if result.error is None:
        status = "succeeded"
    elif result.retryable and attempt < max_attempts:
        delay = retry.backoff_seconds((task.spec or {}).get("backoff_strategy", "exponential_jitter"), attempt)
        doc.update(status="retrying", next_attempt_at=iso(finished + timedelta(seconds=delay)))
        _save_doc(rec, doc, "retrying")
        _visible_in(queue_url, receipt, delay)
        metrics.retry_scheduled()
        # The error's type and step, not its message: that may quote header values or responses.
        error = {"type": result.error["type"], "step": result.error.get("step")}
        logger.info("run_retrying", extra={**log, "attempt": attempt, "delay_s": delay, "error": error})
        raise ReportFailure("retrying")
    else:
        status = "failed"
    doc.update(status=status, finished_at=iso(finished), next_attempt_at=None)
    # Counted before the record is final: a crash in between leaves the run to its retry, whose
    # count finds this one (counters.py); once the record is final, no copy counts it again.
    counters.count(msg.task_id, msg.run_id, status, doc["finished_at"])
    _save_doc(rec, doc, status)
    complete_if_last(task, msg, finished)
    metrics.run_finished(status)
    logger.info("run_finished", extra={**log, "status": status, "attempt": attempt, "duration_ms": doc["duration_ms"]})
    return status


def _task_context(task: TaskModel, payload: Any, now: datetime) -> dict[str, Any]:
    """The task as templates see it, counters as of the run's start; only built (one read of
    the counters) for pipelines whose templates may read it."""
    if not _TASK_IN_TEMPLATE.search(json.dumps(payload)):
        return {}
    from chalicelib.services import tasks as tasks_mod  # the representation lives with the task routes

    return tasks_mod.represent(task, now, counters.read(task.task_id))


def _save_doc(rec: RunModel, doc: dict[str, Any], status: str) -> None:
    size = len(json.dumps(doc, default=str))
    if size > 350_000:  # DynamoDB's item limit is 400 KB: keep the record, drop step outputs
        for s in doc["steps"]:
            s["output"], s["output_truncated"] = None, True
    rec.update(actions=[RunModel.doc.set(doc), RunModel.status.set(status), RunModel.lease_until.remove()])


def complete_if_last(task: TaskModel, msg: RunMessage, now: datetime) -> bool:
    """A once task, or an rrule or cron whose occurrences are exhausted (COUNT/UNTIL, ends_at),
    completes after its last scheduled run finishes (succeeded, failed or skipped). Decided from
    the schedule itself, not from dispatch state, which the tick may not have advanced yet."""
    if msg.trigger != "schedule" or task.schedule_kind == "event":
        return False
    try:
        schedule = dispatch.build_schedule(task.sched or {}, task.task_id, now)
        if schedules.next_fire(schedule, from_epoch(msg.scheduled_for)) is not None:
            return False
    except (schedules.ScheduleError, InvalidSchedule):
        return False  # not computable: the tick pauses the task with a schedule_error
    try:
        TaskModel(task.task_id).update(
            actions=[TaskModel.status.set("completed")],
            condition=(TaskModel.status == "active") & (TaskModel.schedule_version == msg.schedule_version),
        )
    except UpdateError:
        return False  # rescheduled, paused or canceled meanwhile: not complete
    return True
