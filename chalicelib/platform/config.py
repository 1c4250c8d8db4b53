"""Settings read once from the environment.

Everything that differs between the local stack, tests and a deployed stage is an
environment variable; `.chalice/config.json` sets them per stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

PRIORITY_BANDS = ("high", "normal", "low")


def band_for(priority: int) -> str:
    """Priority 1–3 → high, 4–6 → normal, 7–9 → low (one SQS queue per band)."""
    if priority <= 3:
        return "high"
    if priority <= 6:
        return "normal"
    return "low"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


@dataclass(frozen=True)
class Settings:
    prefix: str = "tasksapi-dev-"
    region: str = "us-east-1"
    admin_token: str = ""
    admin_token_param: str = ""
    egress_allow: tuple[str, ...] = ()
    due_shards: int = 8
    tick_seconds: int = 60
    lookahead_seconds: int = 90
    run_retention_days: int = 30
    max_body_bytes: int = 256 * 1024
    max_payload_bytes: int = 64 * 1024
    max_tasks_per_agent: int = 10_000
    max_step_output_bytes: int = 8 * 1024
    event_chain_limit: int = 10
    # Runs the events of one chain may start, past its root's own fan-out (services/events.py).
    event_chain_max_runs: int = 1000
    # A run waiting for a concurrency slot fails `concurrency_wait_timeout` after this long.
    concurrency_wait_timeout_seconds: int = 3600
    # The stuck-run sweep (dispatch/sweeper.py): how long past a run's own deadline (its lease, its
    # retry's instant or its fire, plus the concurrency wait) a live system may still take it up,
    # and how much of the runs table one tick reads (pages of so many items; DynamoDB stops a page
    # at 1 MB).
    sweep_grace_seconds: int = 900
    sweep_page_items: int = 1000
    sweep_pages: int = 1
    # Per-agent token buckets (ratelimit.py): sustained requests a minute and the burst on top.
    rate_writes_per_minute: int = 600
    rate_writes_burst: int = 120
    rate_events_per_minute: int = 600
    rate_events_burst: int = 120
    # Per-agent run budgets (dispatch/budgets.py; an agent's own values, PUT /agents/{id}/budget,
    # win): runs a minute and their burst (0: no limit), runs in flight (0: not counted, since an
    # exact count costs two writes a run), the minimum interval a schedule may fire at (>= 60).
    agent_runs_per_minute: int = 600
    agent_runs_burst: int = 600
    agent_runs_in_flight: int = 0
    min_interval_seconds: int = 60

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def queue_name(self, band: str) -> str:
        return f"{self.prefix}runs-{band}"


@lru_cache(maxsize=1)
def settings() -> Settings:
    allow = os.environ.get("TASKAPI_EGRESS_ALLOW", "")
    return Settings(
        prefix=os.environ.get("TASKAPI_PREFIX", "tasksapi-dev-"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        admin_token=os.environ.get("TASKAPI_ADMIN_TOKEN", ""),
        admin_token_param=os.environ.get("TASKAPI_ADMIN_TOKEN_PARAM", ""),
        egress_allow=tuple(a.strip() for a in allow.split(",") if a.strip()),
        due_shards=_int("TASKAPI_DUE_SHARDS", 8),
        tick_seconds=_int("TASKAPI_TICK_SECONDS", 60),
        lookahead_seconds=_int("TASKAPI_LOOKAHEAD_SECONDS", 0) or _int("TASKAPI_TICK_SECONDS", 60) + 30,
        run_retention_days=_int("TASKAPI_RUN_RETENTION_DAYS", 30),
        max_body_bytes=_int("TASKAPI_MAX_BODY_BYTES", 256 * 1024),
        max_payload_bytes=_int("TASKAPI_MAX_PAYLOAD_BYTES", 64 * 1024),
        max_tasks_per_agent=_int("TASKAPI_MAX_TASKS_PER_AGENT", 10_000),
        max_step_output_bytes=_int("TASKAPI_MAX_STEP_OUTPUT_BYTES", 8 * 1024),
        event_chain_limit=_int("TASKAPI_EVENT_CHAIN_LIMIT", 10),
        event_chain_max_runs=_int("TASKAPI_EVENT_CHAIN_MAX_RUNS", 1000),
        concurrency_wait_timeout_seconds=_int("TASKAPI_CONCURRENCY_WAIT_TIMEOUT_SECONDS", 3600),
        sweep_grace_seconds=_int("TASKAPI_SWEEP_GRACE_SECONDS", 900),
        sweep_page_items=_int("TASKAPI_SWEEP_PAGE_ITEMS", 1000),
        sweep_pages=_int("TASKAPI_SWEEP_PAGES", 1),
        rate_writes_per_minute=_int("TASKAPI_RATE_WRITES_PER_MINUTE", 600),
        rate_writes_burst=_int("TASKAPI_RATE_WRITES_BURST", 120),
        rate_events_per_minute=_int("TASKAPI_RATE_EVENTS_PER_MINUTE", 600),
        rate_events_burst=_int("TASKAPI_RATE_EVENTS_BURST", 120),
        agent_runs_per_minute=_int("TASKAPI_AGENT_RUNS_PER_MINUTE", 600),
        agent_runs_burst=_int("TASKAPI_AGENT_RUNS_BURST", 600),
        agent_runs_in_flight=_int("TASKAPI_AGENT_RUNS_IN_FLIGHT", 0),
        # The engine fires at most once a minute: a smaller setting means 60.
        min_interval_seconds=max(60, _int("TASKAPI_MIN_INTERVAL_SECONDS", 60)),
    )
