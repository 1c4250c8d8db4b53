"""SQS pollers: the event source mappings of the deployed stack, calling the same worker handlers.

A small pool of threads shares the run queues. A free worker always looks at the bands in
priority order (high → normal → low) and takes the first non-empty batch, so a flood on a low
band cannot delay a high-band run by more than the batches already in progress.

Pickup latency vs. idle cost. Run messages become visible mostly by `DelaySeconds` expiring (and
retries by a visibility timeout expiring), and moto's long polls wake only on a *send* of an
immediately visible message, not when a delayed one turns visible. So:

- active: exactly one idle worker (the scout) short-polls the bands every `poll_interval`, while
  the other idle workers sleep; a scout that finds a batch hands scouting to the next idle worker
  before processing it, so under load every worker fills up at once;
- quiet (no message at all in any band — nothing visible, delayed or in flight — which only a
  send can change): the scout long-polls the three bands at once, woken at once by a send with
  no delay, and re-checks quietness between long polls (about every second), which is sooner
  than a send with `DelaySeconds` >= 1 can become visible. An idle stack thus makes ~6 requests
  a second instead of ~30, and a message is picked up within about one interval either way.

Lambda's semantics are kept: up to `batch_size` messages per invocation, the queue's own
visibility timeout, records deleted only when the handler returns and did not list them in
`batchItemFailures` (a raised exception or an invalid response fails the whole batch), failures
left to reappear after their visibility timeout (which the worker may have changed), and
dead-lettering left to the queue's RedrivePolicy (moto applies it on receive).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from local import events
from local.log import logger

Handler = Callable[[dict[str, Any], Any], Any]
Batch = tuple["Band", list[dict[str, Any]]]
ERROR_BACKOFF_SECONDS = 1.0
QUIET_CHECK_SECONDS = 1.0  # how often an active scout asks whether the bands went quiet
WATCH_SECONDS = 1  # one long poll while quiet (SQS takes whole seconds); also bounds a stop
_COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]


@dataclass(frozen=True)
class Band:
    name: str
    queue_url: str
    queue_arn: str
    handler: Handler
    function_name: str
    batch_size: int = 10
    timeout_seconds: int = 60  # the function's timeout: the context's get_remaining_time_in_millis()


@dataclass(frozen=True)
class BatchOutcome:
    band: str
    size: int
    deleted: int
    failed: int
    whole_batch_failed: bool


class Pollers:
    def __init__(
        self, sqs: Any, bands: Sequence[Band], *, workers: int, poll_interval: float, region: str, stop: threading.Event
    ) -> None:
        self._sqs = sqs
        self._bands = tuple(bands)
        self._rank = {b.name: i for i, b in enumerate(self._bands)}
        self._interval = poll_interval
        self._region = region
        self._stop = stop
        self._cond = threading.Condition()
        self._scouting = False
        # Batches a quiet-time long poll received while the scout was already busy with another.
        self._pending: list[tuple[int, int, Batch]] = []
        self._seq = itertools.count()
        self._watchers = ThreadPoolExecutor(max_workers=len(self._bands), thread_name_prefix="sqs-watch")
        self._threads = [
            threading.Thread(target=self._run, name=f"sqs-poller-{i}", daemon=True) for i in range(workers)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wake_all(self) -> None:
        """After `stop` is set: let idle workers see it now instead of at their next timeout."""
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait for every worker to finish its in-flight batch; False if some did not in time.
        Batches received but not started are made visible again for whoever polls next."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(max(0.0, deadline - time.monotonic()))
        self._watchers.shutdown(wait=True)
        with self._cond:
            leftovers, self._pending = self._pending, []
        for _, _, (band, messages) in leftovers:
            self._release(band, messages)
        return not any(t.is_alive() for t in self._threads)

    # ---- one worker ----------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._process(*batch)

    def _next_batch(self) -> Batch | None:
        """A batch to process (a pending one first, else by scouting); None once stopping."""
        while True:
            with self._cond:
                while not self._pending and self._scouting and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._pending:
                    return heapq.heappop(self._pending)[2]
                if self._stop.is_set():
                    return None
                self._scouting = True
            try:
                found = self._scout()
            finally:
                with self._cond:
                    self._scouting = False
                    self._cond.notify()
            if found is not None:
                return found

    def _scout(self) -> Batch | None:
        """Poll until a batch turns up (or a quiet-time long poll queued one), or until stop."""
        next_poll = last_quiet_check = time.monotonic()
        watching = False
        while not self._stop.is_set():
            try:
                if watching:
                    found = self._watch()
                    if found is not None or self._has_pending():
                        return found
                    watching, last_quiet_check = self._all_quiet(), time.monotonic()
                    if watching:
                        continue
                    next_poll = time.monotonic()  # something was sent meanwhile: poll actively from now
                for band in self._bands:
                    messages = self._receive(band)
                    if messages:
                        return band, messages
                if self._has_pending():
                    return None
                if time.monotonic() - last_quiet_check >= QUIET_CHECK_SECONDS:
                    watching, last_quiet_check = self._all_quiet(), time.monotonic()
                    if watching:
                        continue
            except Exception:  # noqa: BLE001 - the emulator restarting or going away: keep polling, slowly
                logger.exception("poll_failed")
                self._stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            # Poll on a fixed cadence: the time spent polling counts toward the interval.
            next_poll = max(next_poll + self._interval, time.monotonic())
            self._stop.wait(next_poll - time.monotonic())
        return None

    def _all_quiet(self) -> bool:
        for band in self._bands:
            attrs = self._sqs.get_queue_attributes(QueueUrl=band.queue_url, AttributeNames=_COUNTS)["Attributes"]
            if any(int(attrs.get(name, 0)) for name in _COUNTS):
                return False
        return True

    def _watch(self) -> Batch | None:
        """Long-poll every band at once; return the first batch, queue any later one."""
        futures = {self._watchers.submit(self._receive, band, WATCH_SECONDS): band for band in self._bands}
        waiting: set[Future[list[dict[str, Any]]]] = set(futures)
        found: Batch | None = None
        while waiting and found is None:
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: self._rank[futures[f].name]):
                messages = self._result(futures[f], f)
                if messages and found is None:
                    found = futures[f], messages
                elif messages:
                    self._queue(futures[f], messages)
        for f in waiting:  # still polling: whatever they receive is processed, never stranded
            f.add_done_callback(self._queue_when_done(futures[f]))
        return found

    def _queue_when_done(self, band: Band) -> Callable[[Future[list[dict[str, Any]]]], None]:
        return lambda f: self._queue(band, self._result(band, f))

    @staticmethod
    def _result(band: Band, f: Future[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            return f.result()
        except Exception:  # noqa: BLE001 - one failed long poll: the scout polls again
            logger.exception("poll_failed", extra={"band": band.name})
            return []

    def _queue(self, band: Band, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        with self._cond:
            heapq.heappush(self._pending, (self._rank[band.name], next(self._seq), (band, messages)))
            self._cond.notify()

    def _has_pending(self) -> bool:
        with self._cond:
            return bool(self._pending)

    def _receive(self, band: Band, wait_seconds: int = 0) -> list[dict[str, Any]]:
        resp = self._sqs.receive_message(
            QueueUrl=band.queue_url,
            MaxNumberOfMessages=band.batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(resp.get("Messages") or [])

    def _release(self, band: Band, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(messages)
        ]
        try:
            self._sqs.change_message_visibility_batch(QueueUrl=band.queue_url, Entries=entries)
        except Exception:  # noqa: BLE001 - they reappear after their visibility timeout anyway
            logger.exception("release_failed", extra={"band": band.name, "count": len(entries)})

    def _process(self, band: Band, messages: list[dict[str, Any]]) -> BatchOutcome:
        event = events.sqs_event(messages, band.queue_arn, self._region)
        context = events.lambda_context(band.function_name, band.timeout_seconds)
        ids = [m["MessageId"] for m in messages]
        started = time.monotonic()
        failed: set[str] | None
        try:
            failed = events.failed_ids(band.handler(event, context), ids)
            if failed is None:
                logger.error("worker_invalid_response", extra={"band": band.name, "request_id": context.aws_request_id})
        except Exception:  # noqa: BLE001 - a raising handler fails the whole batch, as on Lambda
            logger.exception("worker_failed", extra={"band": band.name, "request_id": context.aws_request_id})
            failed = None
        deleted = 0
        if failed is not None:
            done = [m for m in messages if m["MessageId"] not in failed]
            deleted = self._delete(band, done)
        outcome = BatchOutcome(
            band.name, len(messages), deleted, len(messages) if failed is None else len(failed), failed is None
        )
        logger.info(
            "worker_batch",
            extra={
                "band": band.name,
                "size": outcome.size,
                "deleted": outcome.deleted,
                "failed": outcome.failed,
                "whole_batch_failed": outcome.whole_batch_failed,
                "request_id": context.aws_request_id,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "receive_counts": [int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)) for m in messages],
            },
        )
        return outcome

    def _delete(self, band: Band, messages: list[dict[str, Any]]) -> int:
        if not messages:
            return 0
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            resp = self._sqs.delete_message_batch(QueueUrl=band.queue_url, Entries=entries)
        except Exception:  # noqa: BLE001 - the messages reappear after their visibility timeout: at-least-once
            logger.exception("delete_failed", extra={"band": band.name, "count": len(entries)})
            return 0
        for f in resp.get("Failed") or []:
            logger.error("delete_failed", extra={"band": band.name, "code": f.get("Code"), "detail": f.get("Message")})
        return len(resp.get("Successful") or [])
