"""Business metrics as CloudWatch EMF lines (Powertools), namespace "TasksApi".

Call the recorders where things happen and `flush()` once at the end of each Lambda
invocation (one EMF line per flush, written to stdout: CloudWatch Logs turns it into
metrics; no API call, no IAM permission). Outside Lambda the same line is printed, which
is harmless; `POWERTOOLS_METRICS_DISABLED=true` (or `POWERTOOLS_DEV=true` without it)
turns every function here into a no-op. Dimensions: service=tasks-api and prefix=<the
stage's TASKAPI_PREFIX>, so two stages in one account never mix; the alarms in
infra/resources.json read exactly these.
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled

NAMESPACE = "TasksApi"
SERVICE = "tasks-api"

_lock = threading.Lock()
_provider: Any = None
_RUN_METRIC = {"succeeded": "RunsSucceeded", "failed": "RunsFailed", "skipped": "RunsSkipped"}


def enabled() -> bool:
    return not is_metrics_disabled()


def _emf() -> Any:
    global _provider
    if _provider is None:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

        from chalicelib.platform.config import settings

        _provider = AmazonCloudWatchEMFProvider(
            namespace=NAMESPACE, service=SERVICE, default_dimensions={"prefix": settings().prefix or "none"}
        )
    return _provider


def _add(name: str, unit: str, value: float) -> None:
    if not enabled():  # checked here too: Powertools prints a full set of 100 values even when disabled
        return
    with _lock:
        _emf().add_metric(name=name, unit=unit, value=value)


def run_finished(status: str) -> None:
    """A run reached a final status: succeeded, failed or skipped (RunsSucceeded/RunsFailed/RunsSkipped)."""
    metric = _RUN_METRIC.get(status)
    if metric is not None:
        _add(metric, "Count", 1)


def retry_scheduled() -> None:
    """A failed attempt was scheduled for another try (RunRetries)."""
    _add("RunRetries", "Count", 1)


def dead_lettered() -> None:
    """A message was moved to a DLQ by the worker (RunsDeadLettered)."""
    _add("RunsDeadLettered", "Count", 1)


def dispatch_lag(seconds: float) -> None:
    """Start lag of an attempt: started_at - scheduled_for (DispatchLag, seconds; never negative)."""
    _add("DispatchLag", "Seconds", max(0.0, float(seconds)))


def tick_finished(duration_s: float, dispatched: int, skipped: int = 0) -> None:
    """One tick: its duration (TickDuration), the fires it sent (FiresDispatched) and recorded as
    missed (FiresSkipped)."""
    _add("TickDuration", "Seconds", max(0.0, float(duration_s)))
    _add("FiresDispatched", "Count", dispatched)
    if skipped:
        _add("FiresSkipped", "Count", skipped)


def flush() -> None:
    """Write what was recorded since the last flush as one EMF line (nothing when nothing was recorded)."""
    if _provider is None:
        return
    with _lock:
        if not _provider.metric_set:
            return
        if not enabled():
            _provider.clear_metrics()
            return
        _provider.flush_metrics()
