"""The stuck-run sweep: every run ends, even one whose message SQS lost track of. Each minute
the tick reads bounded pages of the runs table (`RunSweep.page`: one eventually consistent Scan
request of at most `TASKAPI_SWEEP_PAGE_ITEMS` items and 1 MB; `TASKAPI_SWEEP_PAGES` a tick, one
by default) from a cursor kept with the shard leases, and moves the cursor on; at the table's
end the pass starts over. The cost is fixed per tick, whatever the traffic: no index and no
write per run (docs/architecture.md has the pass length and the bill).

A run on the page that is not final and is past its deadline plus the concurrency wait plus a
grace (`attempts.stuck`: a healthy run, one waiting for a slot, or one whose message is between
deliveries, is never past it) is read again consistently and, if still stuck, failed through
`runs.fail_abandoned` (the dead-letter sweep's path: counted like any finish, saved only if the
record is still as read), `worker_lost` if an attempt was claimed, `run_stuck` otherwise. A
worker that claims or finishes it at the same moment keeps it: exactly one of the two writes
lands."""

from __future__ import annotations

from datetime import datetime

from chalicelib.dispatch.completion import complete_after_sweep
from chalicelib.domain import attempts
from chalicelib.domain.records import Run
from chalicelib.platform.config import settings
from chalicelib.platform.log import failure, logger
from chalicelib.store import runs, stores


def sweep(now: datetime) -> int:
    """`TASKAPI_SWEEP_PAGES` pages of the pass (one by default); returns the runs failed. A failure
    is logged and leaves the cursor where it was (that page is read again next tick), and never
    fails the tick's dispatch."""
    failed = 0
    try:
        for _ in range(max(1, settings().sweep_pages)):
            done, more = _page(now)
            failed += done
            if not more:
                break  # the table's end: the next tick starts the next pass
    except Exception as exc:  # noqa: BLE001 - the tick's dispatch must not fail for the sweep
        logger.error("stuck_run_sweep_failed", extra=failure(exc))
    return failed


def _page(now: datetime) -> tuple[int, bool]:
    """One page: (the runs failed, whether the pass goes on)."""
    s = settings()
    port = stores().sweep
    page = port.page(port.cursor(), limit=max(1, s.sweep_page_items))
    wait, grace = s.concurrency_wait_timeout_seconds, s.sweep_grace_seconds
    failed = 0
    for seen in page.runs:
        if runs.expired(seen, now) or attempts.stuck(seen, now, wait=wait, grace=grace) is None:
            continue
        # The page may be a second old (eventually consistent): judged again on the record itself.
        run = runs.get(seen.task_id, seen.run_id, now)
        error = None if run is None else attempts.stuck(run, now, wait=wait, grace=grace)
        if run is None or error is None:
            continue
        if runs.fail_abandoned(run, error, _note(run, error, wait + grace), now):
            failed += 1
            complete_after_sweep(run, now)  # a `once` task whose run was lost completes
    port.keep_cursor(page.next)
    return failed, page.next is not None


def _note(run: Run, error: str, bound: int) -> str:
    if error == attempts.RUN_STUCK:
        return f"no worker claimed the run within {bound} s of its fire (the stuck-run sweep)"
    return (
        f"attempt {run.attempt} of {run.max_attempts} was {run.status} and no worker took the run up "
        f"within {bound} s (the stuck-run sweep)"
    )
