"""Drive the tick and the workers in-process, on a test clock shared with moto's SQS
(so `DelaySeconds` and visibility timeouts follow the test's time, not the wall's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import moto.sqs.models as moto_sqs
import pytest

from bench.common import Requests, app_clients
from chalicelib import dispatch
from chalicelib.platform import wiring
from chalicelib.platform.config import PRIORITY_BANDS, settings
from local import events as lambda_events


@dataclass
class Clock:
    t: float

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, tz=UTC)


@pytest.fixture()
def clock(env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock(datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp())
    wiring.set_clock(c, sleep=c.advance)
    monkeypatch.setattr(moto_sqs, "unix_time", lambda *a: c.t)
    monkeypatch.setattr(moto_sqs, "unix_time_millis", lambda *a: c.t * 1000.0)
    yield c
    wiring.reset()


def queue_url(band: str) -> str:
    return boto3.client("sqs").get_queue_url(QueueName=settings().queue_name(band))["QueueUrl"]


def queue_arn(band: str) -> str:
    return f"arn:aws:sqs:us-east-1:123456789012:{settings().queue_name(band)}"


@dataclass
class Workers:
    """Receive from the run queues in priority order and call the same handlers Lambda calls."""

    clock: Clock
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (band, run_id) in start order

    def poll_once(self, bands: tuple[str, ...] = PRIORITY_BANDS, max_messages: int = 10) -> int:
        import app

        sqs = boto3.client("sqs")
        for band in bands:
            resp = sqs.receive_message(
                QueueUrl=queue_url(band),
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = resp.get("Messages") or []
            if not messages:
                continue
            for m in messages:
                try:
                    self.outcomes.append((band, json.loads(m["Body"]).get("run_id", "?")))
                except (ValueError, AttributeError):
                    self.outcomes.append((band, "?"))
            event = lambda_events.sqs_event(messages, queue_arn(band), "us-east-1")
            handler = getattr(app, f"worker_{band}")
            failed = lambda_events.failed_ids(handler(event, None), [m["MessageId"] for m in messages])
            done = [m for m in messages if failed is not None and m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=queue_url(band),
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            return len(messages)
        return 0

    def drain(self, rounds: int = 50) -> int:
        total = 0
        for _ in range(rounds):
            n = self.poll_once()
            total += n
            if n == 0:
                break
        return total


@pytest.fixture()
def workers(clock: Clock) -> Workers:
    return Workers(clock)


def all_messages() -> list[dict[str, Any]]:
    """Every run message in every run queue, delayed or in flight included (moto's view)."""
    out = []
    for band in PRIORITY_BANDS:
        backend = moto_sqs.sqs_backends["123456789012"]["us-east-1"]
        q = backend.queues[settings().queue_name(band)]
        out += [json.loads(m.body) for m in q._messages]
    return out


def run_records(task_id: str | None = None) -> list[dict[str, Any]]:
    ddb = boto3.client("dynamodb")
    items = ddb.scan(TableName="test-runs")["Items"]
    docs = [json.loads(i["doc"]["S"]) for i in items]
    return [d for d in docs if task_id is None or d["task_id"] == task_id]


def tick(clock: Clock) -> dispatch.TickReport:
    return dispatch.run_tick(wiring.now_precise())


class RequestCounter(Requests):
    """Counts AWS API calls per (service, operation) on every client the app uses."""

    def __init__(self) -> None:
        super().__init__(app_clients())


class Crash(Exception):
    """Stands for the process dying at that point."""


def crash_on(client: Any, event: str, *, after_calls: int = 0) -> Any:
    """Raise Crash on the (after_calls+1)-th matching call; returns an `undo`."""
    seen = {"n": 0}

    def hook(**_: Any) -> None:
        seen["n"] += 1
        if seen["n"] == after_calls + 1:
            raise Crash(event)

    client.meta.events.register(event, hook)
    return lambda: client.meta.events.unregister(event, hook)


class TableCalls:
    """Counts DynamoDB calls per (table without its prefix, operation), e.g. ("tasks", "UpdateItem")."""

    def __init__(self) -> None:
        from collections import Counter

        self.calls: Counter[tuple[str, str]] = Counter()

    def _hook(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        table = str(params.get("TableName", "")).removeprefix(settings().prefix)
        self.calls[(table, model.name)] += 1

    def __enter__(self) -> TableCalls:
        for c in app_clients():
            c.meta.events.register("before-parameter-build.dynamodb", self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        for c in app_clients():
            c.meta.events.unregister("before-parameter-build.dynamodb", self._hook)

    def writes(self, table: str) -> int:
        return sum(
            n for (t, op), n in self.calls.items() if t == table and op in ("PutItem", "UpdateItem", "DeleteItem")
        )
