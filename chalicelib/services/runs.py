"""Where the services and dispatch still import run records from: they live in
`store/runs.py` (below both layers) and `domain/runs.py`; import them from there."""

from __future__ import annotations

from chalicelib.store.runs import (
    RunMessage,
    adhoc_run_id,
    event_run_id,
    expired,
    expiry,
    fail_unclaimed,
    fail_unqueued,
    fence,
    get,
    new_doc,
    new_run,
    put_new,
    scheduled_run_id,
)

__all__ = [
    "RunMessage",
    "adhoc_run_id",
    "event_run_id",
    "expired",
    "expiry",
    "fail_unclaimed",
    "fail_unqueued",
    "fence",
    "get",
    "new_doc",
    "new_run",
    "put_new",
    "scheduled_run_id",
]
