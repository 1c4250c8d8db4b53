"""Retry timing: a pure function of (strategy, attempt), as API.md defines it."""

from __future__ import annotations

import random

BASE_SECONDS = 10
CAP_SECONDS = 3600


def backoff_seconds(strategy: str, attempt: int, rng: random.Random | None = None) -> int:
    """Delay before the attempt after `attempt` (1-based) failed.

    fixed: base; linear: base × attempt; exponential_jitter ("full jitter"): uniform in
    [0, min(cap, base × 2^(attempt−1))]. Whole seconds, rounded up, never above the cap.
    """
    if strategy == "fixed":
        return BASE_SECONDS
    if strategy == "linear":
        return min(CAP_SECONDS, BASE_SECONDS * attempt)
    ceiling = min(CAP_SECONDS, BASE_SECONDS * 2 ** min(attempt - 1, 20))
    return min(CAP_SECONDS, int(-(-(rng or random).uniform(0, ceiling) // 1)))


def bounds(strategy: str, attempt: int) -> tuple[int, int]:
    """The smallest and largest delay `backoff_seconds` may return (for tests and docs)."""
    if strategy == "fixed":
        return BASE_SECONDS, BASE_SECONDS
    if strategy == "linear":
        d = min(CAP_SECONDS, BASE_SECONDS * attempt)
        return d, d
    return 0, min(CAP_SECONDS, BASE_SECONDS * 2 ** min(attempt - 1, 20))
