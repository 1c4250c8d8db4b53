"""Composition root: routes, the scheduled tick and the SQS workers.

Each deployed function imports only what its handler needs: the handlers import their modules
when first called, and the event functions (the tick, the workers, aws_events) do not load the
routes at all. Lambda names each function `<app>-<stage>-<name>` in AWS_LAMBDA_FUNCTION_NAME;
without it (chalice deploy and package, the local stack, the tests) everything is registered.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chalice import Chalice, Rate

from chalicelib.platform.config import settings

EVENT_FUNCTIONS = ("tick", "worker_high", "worker_normal", "worker_low", "aws_events")

app = Chalice(app_name="tasks-api")

if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "").endswith(tuple(f"-{f}" for f in EVENT_FUNCTIONS)):
    from chalicelib.http.api import bp
    from chalicelib.http.console import bp as console_bp

    app.register_blueprint(bp)
    app.register_blueprint(console_bp)  # the web console at /console: static files only


@app.schedule(Rate(1, unit=Rate.MINUTES), name="tick")
def tick(event: Any) -> dict[str, Any]:
    from chalicelib import dispatch
    from chalicelib.platform import metrics, wiring

    started = time.monotonic()
    try:
        report = dispatch.run_tick(wiring.now_precise())
        metrics.tick_finished(time.monotonic() - started, report.dispatched, report.skipped)
        return {"dispatched": report.dispatched, "skipped": report.skipped}
    finally:
        metrics.flush()


def _work(event: Any) -> dict[str, Any]:
    from chalicelib.execution import worker
    from chalicelib.platform import metrics

    try:
        return worker.handle_batch(event.to_dict())
    finally:
        metrics.flush()


# One worker per priority band; each band's queue is drained independently, and deployed
# concurrency per band (maximum_concurrency) keeps low-priority floods from starving band "high".
@app.on_sqs_message(queue=settings().queue_name("high"), batch_size=10, name="worker_high", maximum_concurrency=20)
def worker_high(event: Any) -> dict[str, Any]:
    return _work(event)


@app.on_sqs_message(queue=settings().queue_name("normal"), batch_size=10, name="worker_normal", maximum_concurrency=10)
def worker_normal(event: Any) -> dict[str, Any]:
    return _work(event)


@app.on_sqs_message(queue=settings().queue_name("low"), batch_size=10, name="worker_low", maximum_concurrency=5)
def worker_low(event: Any) -> dict[str, Any]:
    return _work(event)


# AWS events in (off by default): the EventBridge rule that docs/deploy.md's AwsEventsPattern
# creates invokes this with {"agent_id", "event"}; each event becomes that agent's internal event.
@app.lambda_function(name="aws_events")
def aws_events(event: Any, context: Any) -> dict[str, Any]:
    from chalicelib.platform import metrics, wiring
    from chalicelib.services import awsevents

    try:
        return awsevents.handle(event, wiring.now())
    finally:
        metrics.flush()
