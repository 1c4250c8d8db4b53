"""The tick loop: the EventBridge rule of the deployed stack, calling the same scheduled handler.

Ticks fall half a period after wall-clock multiples of the period (…:30 for a minute), and the
first one runs at start. Dispatch runs ahead of the fires, so a tick never needs to be on the
minute — and off it, its burst of database work does not land on the instant most schedules
fire (…:00), where it would delay their runs. Ticks never overlap here; a tick that overruns skips the boundaries it missed
(logged), where EventBridge would have started concurrent invocations.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from local import events
from local.log import logger

Handler = Callable[[dict[str, Any], Any], Any]


def next_boundary(now: float, period: float) -> float:
    """The first instant strictly after `now` that is half a period past a multiple of `period`."""
    offset = period / 2
    return (math.floor((now - offset) / period) + 1) * period + offset


class TickLoop(threading.Thread):
    def __init__(
        self,
        handler: Handler,
        period: float,
        function_name: str,
        region: str,
        stop: threading.Event,
        timeout_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="tick-loop", daemon=True)
        self._handler = handler
        self._period = period
        self._function_name = function_name
        self._rule_arn = events.rule_arn(function_name, region)
        self._region = region
        self._halt = stop
        self._timeout = timeout_seconds
        self._clock = clock
        self.first_tick_done = threading.Event()
        self.ticks = 0

    def run(self) -> None:
        scheduled = self._clock()
        while not self._halt.is_set():
            self._tick(scheduled)
            self.first_tick_done.set()
            now = self._clock()
            following = next_boundary(now, self._period)
            missed = round((following - scheduled) / self._period) - 1 if self.ticks > 1 else 0
            if missed > 0:
                logger.warning("tick_overran", extra={"missed_ticks": missed})
            scheduled = following
            # Event.wait() can wake a little early; never run a tick before its instant.
            while not self._halt.is_set() and self._clock() < scheduled:
                self._halt.wait(max(0.0, scheduled - self._clock()) + 0.001)

    def _tick(self, scheduled: float) -> None:
        when = datetime.fromtimestamp(scheduled, tz=UTC)
        event = events.scheduled_event(when, self._rule_arn, self._region)
        context = events.lambda_context(self._function_name, self._timeout)
        started = time.monotonic()
        try:
            result = self._handler(event, context)
        except Exception:  # noqa: BLE001 - a failed tick must not stop the schedule (EventBridge keeps firing)
            logger.exception(
                "tick_failed", extra={"scheduled_for": event["time"], "request_id": context.aws_request_id}
            )
            return
        finally:
            self.ticks += 1
        logger.info(
            "tick",
            extra={
                "scheduled_for": event["time"],
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "result": result,
                "request_id": context.aws_request_id,
            },
        )
