"""The one place that builds AWS clients and reads the clock.

Clients are created lazily on first use (never at import time) and cached, so a
Lambda cold start pays only for what it touches and tests can point everything at
moto by environment alone. `reset()` drops the cache (tests, moto resets).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.platform.config import settings

_lock = threading.Lock()
_urls_lock = threading.Lock()
_clock: Callable[[], float] = time.time
_sleep: Callable[[float], None] = time.sleep


@cache
def client(service: str) -> Any:
    # boto3's default session is not thread-safe to create clients from; the lock makes
    # concurrent first use (threaded local server, worker pool) safe.
    with _lock:
        return boto3.session.Session().client(
            service,
            region_name=settings().region,
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=32),
        )


def queue_url(band: str) -> str:
    with _urls_lock:  # parallel tick shards would otherwise each look the URLs up
        return _queue_urls()[band]


@lru_cache(maxsize=1)
def _queue_urls() -> dict[str, str]:
    sqs = client("sqs")
    from chalicelib.platform.config import PRIORITY_BANDS

    return {b: sqs.get_queue_url(QueueName=settings().queue_name(b))["QueueUrl"] for b in PRIORITY_BANDS}


def now() -> datetime:
    """Current time in UTC, whole seconds (the API's precision)."""
    return datetime.fromtimestamp(int(_clock()), tz=UTC)


def now_precise() -> datetime:
    return datetime.fromtimestamp(_clock(), tz=UTC)


def sleep(seconds: float) -> None:
    _sleep(seconds)


def set_clock(fn: Callable[[], float], sleep: Callable[[float], None] | None = None) -> None:
    """Tests and benchmarks move time by handing in a clock (and a sleep that advances it)."""
    global _clock, _sleep
    _clock = fn
    _sleep = sleep or time.sleep


def reset() -> None:
    global _clock, _sleep
    _clock, _sleep = time.time, time.sleep
    client.cache_clear()
    _queue_urls.cache_clear()
