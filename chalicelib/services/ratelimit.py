"""Per-agent rate limits: a token bucket per agent and kind of request, kept on the agent's item.

The bucket is GCRA (the "generic cell rate algorithm", a token bucket written as one number):
`tat`, the theoretical arrival time, moves one emission interval later per request; a request is
refused while `tat` is more than `burst - 1` intervals ahead of now. One number means one or two
small conditional UpdateItems per limited request, exact across every Lambda and thread (no per-container
counting), and no item or table of its own. Only agents' writes and events are limited (reads are
cheap and the admin is the operator); a limit of 0 turns a bucket off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from chalicelib.domain.errors import RateLimited
from chalicelib.platform.config import settings
from chalicelib.store import stores

Bucket = Literal["writes", "events"]
_ATTEMPTS = 4  # rounds of SET-if-idle / ADD-if-busy; each round loses only to a concurrent change


@dataclass(frozen=True)
class Limit:
    per_minute: int
    burst: int

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.per_minute


def limit_for(bucket: Bucket) -> Limit:
    s = settings()
    if bucket == "events":
        return Limit(s.rate_events_per_minute, s.rate_events_burst)
    return Limit(s.rate_writes_per_minute, s.rate_writes_burst)


def decide(tat_ms: int | None, now_ms: int, limit: Limit) -> tuple[int | None, float]:
    """(the new tat, 0) when the request may go, (None, seconds to wait) when it may not. Pure."""
    tat = max(tat_ms or now_ms, now_ms)
    ahead = tat - now_ms
    allowance = (max(limit.burst, 1) - 1) * limit.interval_ms
    if ahead > allowance:
        return None, (ahead - allowance) / 1000
    return int(tat + limit.interval_ms), 0.0


def take(agent_id: str, bucket: Bucket, now_ms: int) -> None:
    """Spend one request of `agent_id`'s `bucket`, or raise 429 with Retry-After.

    No read-modify-write: an idle bucket (tat in the past) is restarted with a conditional SET, a
    busy one within its allowance moves with an atomic ADD, so concurrent requests of one agent
    never lose an update to each other. Only a refusal reads the bucket (for Retry-After)."""
    limit = limit_for(bucket)
    if limit.per_minute <= 0:
        return
    agents = stores().agents
    step = int(math.ceil(limit.interval_ms))
    allowance = int((max(limit.burst, 1) - 1) * limit.interval_ms)
    for _ in range(_ATTEMPTS):
        if agents.restart_bucket(agent_id, bucket, now_ms + step, idle_before_ms=now_ms):
            return
        if agents.advance_bucket(agent_id, bucket, step, low_ms=now_ms, high_ms=now_ms + allowance):
            return
        current = agents.bucket(agent_id, bucket)
        if current is None:
            return  # both conditions fail on an unset bucket only when the agent is gone: nothing to limit
        _, wait = decide(current, now_ms, limit)
        if wait > 0:
            raise RateLimited(
                f"rate limit: {limit.per_minute} {bucket} a minute (bursts of {limit.burst}) for this agent; "
                f"retry in {wait:.1f} s",
                retry_after=math.ceil(wait),
            )
        # The bucket moved between the two conditions (another request of this agent): again.
    raise RateLimited(f"rate limit: too many concurrent {bucket} for this agent", retry_after=1)
