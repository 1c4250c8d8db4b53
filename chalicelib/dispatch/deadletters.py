"""The dead-letter sweep: nothing is dead-lettered silently. Each minute the tick receives from
the three bands' DLQs (a message lands there when its run could not be decoded, or when SQS
gave up on it at `maxReceiveCount`), finishes each run that is not final `failed` with error
type `dead_lettered` through the run store, then deletes the message: the run record is the
operator's copy (it keeps the DLQ's reason). A message whose run is already final is deleted;
one whose run is executing under a live lease is left for a later sweep."""

from __future__ import annotations

from datetime import datetime

from chalicelib.dispatch.completion import complete_after_sweep
from chalicelib.dispatch.queue import BATCH, DeadLetter, RunQueues, queues
from chalicelib.domain import attempts
from chalicelib.domain.records import RunStatus
from chalicelib.domain.runs import RunMessage, new_doc
from chalicelib.domain.timefmt import iso
from chalicelib.platform.config import PRIORITY_BANDS
from chalicelib.platform.log import failure, logger
from chalicelib.store import runs, stores
from chalicelib.store.runs import new_run

DEAD_LETTERED = "dead_lettered"
MAX_PAGES = 5  # per DLQ and sweep (10 messages a page): a burst drains over a few minutes


def sweep(now: datetime) -> int:
    """One ReceiveMessage per DLQ when they are empty (3 requests a minute); returns the runs failed."""
    failed = 0
    q = queues()
    for band in PRIORITY_BANDS:
        try:
            failed += _sweep_queue(q, band, now)
        except Exception as exc:  # noqa: BLE001 - the tick's dispatch must not fail for the sweep
            logger.error("dead_letter_sweep_failed", extra={"band": band, **failure(exc)})
    return failed


def _sweep_queue(q: RunQueues, band: str, now: datetime) -> int:
    failed = 0
    for _ in range(MAX_PAGES):
        got = q.receive_dead(band)
        for m in got:
            done, ended = _settle(m, now)
            failed += ended
            if done:
                q.delete_dead(band, m.handle)
        if len(got) < BATCH:
            break
    return failed


def _settle(m: DeadLetter, now: datetime) -> tuple[bool, bool]:
    """(whether the message may go, whether a run was failed here)."""
    reason = m.reason or "the queue's maxReceiveCount"
    try:
        msg = RunMessage.from_json(m.body)
    except (ValueError, TypeError, KeyError):
        # No run to finish: said out loud (its size only: a body may hold anything), then dropped.
        logger.error("dead_letter_undecodable", extra={"bytes": len(m.body)})
        return True, False
    note = f"the run's message was dead-lettered: {reason}"
    seen = stores().runs.get(msg.task_id, msg.run_id)
    if seen is None:
        doc = new_doc(msg, status=RunStatus.FAILED.value, max_attempts=1, now=now)
        doc.update(finished_at=iso(now), error={"type": DEAD_LETTERED, "message": note[:500], "step": None})
        created = runs.put_new(msg, doc, now)  # counted first (put_new), as a fire's own record
        if created:
            complete_after_sweep(new_run(msg, doc, now), now)
        return True, created
    if seen.status.final:
        return True, False
    if attempts.standing(seen, now) is not None:
        return False, False  # executing elsewhere: that worker records the outcome
    # It moved meanwhile (False): the next sweep looks again.
    ended = runs.fail_abandoned(seen, DEAD_LETTERED, note, now)
    if ended:
        complete_after_sweep(seen, now)  # a `once` task whose run was dead-lettered completes
    return ended, ended
