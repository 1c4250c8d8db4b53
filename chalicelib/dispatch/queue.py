"""Sending run messages to the priority bands' run queues: SQS in a deployment, a list in
memory for fast tests and the scale model (`use`)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chalicelib.dispatch.plan import Send, delay_for
from chalicelib.platform import wiring
from chalicelib.platform.log import logger

BATCH = 10  # SendMessageBatch's ceiling


@dataclass(frozen=True)
class DeadLetter:
    body: str
    reason: str | None  # the worker's reason attribute; None: SQS's maxReceiveCount
    handle: str


class RunQueues(Protocol):
    def send_batch(self, band: str, sends: Sequence[Send]) -> set[str]:
        """Send up to BATCH messages to the band's queue, each delayed until its fire;
        returns the run ids the queue accepted."""
        ...

    def receive_dead(self, band: str) -> list[DeadLetter]:
        """Up to BATCH messages of the band's dead-letter queue (one request, no wait)."""
        ...

    def delete_dead(self, band: str, handle: str) -> None: ...


class SqsRunQueues:
    def send_batch(self, band: str, sends: Sequence[Send]) -> set[str]:
        resp = wiring.client("sqs").send_message_batch(
            QueueUrl=wiring.queue_url(band),
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": s.message.to_json(),
                    "DelaySeconds": delay_for(s.message.scheduled_for, wiring.now_precise().timestamp()),
                }
                for n, s in enumerate(sends)
            ],
        )
        for entry in resp.get("Failed", []):
            logger.warning(
                "send_failed", extra={"run_id": sends[int(entry["Id"])].message.run_id, "code": entry.get("Code")}
            )
        return {sends[int(entry["Id"])].message.run_id for entry in resp.get("Successful", [])}

    def receive_dead(self, band: str) -> list[DeadLetter]:
        got = wiring.client("sqs").receive_message(
            QueueUrl=_dlq(band), MaxNumberOfMessages=BATCH, WaitTimeSeconds=0, MessageAttributeNames=["reason"]
        )
        return [
            DeadLetter(
                m["Body"], m.get("MessageAttributes", {}).get("reason", {}).get("StringValue"), m["ReceiptHandle"]
            )
            for m in got.get("Messages", [])
        ]

    def delete_dead(self, band: str, handle: str) -> None:
        wiring.client("sqs").delete_message(QueueUrl=_dlq(band), ReceiptHandle=handle)


def _dlq(band: str) -> str:
    return wiring.queue_url(band) + "-dlq"  # named after its queue (infra/resources.json)


@dataclass
class MemoryRunQueues:
    """Keeps what was sent, per band, with the delay SQS would have applied; refuses the
    run ids in `refuse` (a queue that does not accept every message of a batch)."""

    sent: dict[str, list[tuple[Send, int]]] = field(default_factory=lambda: defaultdict(list))
    refuse: set[str] = field(default_factory=set)
    batches: int = 0
    dead: dict[str, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send_batch(self, band: str, sends: Sequence[Send]) -> set[str]:
        assert len(sends) <= BATCH, "SQS refuses a batch of more than 10"
        ok = [s for s in sends if s.message.run_id not in self.refuse]
        now = wiring.now_precise().timestamp()
        with self._lock:
            self.batches += 1
            self.sent[band].extend((s, delay_for(s.message.scheduled_for, now)) for s in ok)
        return {s.message.run_id for s in ok}

    def receive_dead(self, band: str) -> list[DeadLetter]:
        with self._lock:
            return list(self.dead[band][:BATCH])

    def delete_dead(self, band: str, handle: str) -> None:
        with self._lock:
            self.dead[band] = [d for d in self.dead[band] if d.handle != handle]

    def run_ids(self) -> list[str]:
        with self._lock:
            return [s.message.run_id for band in self.sent.values() for s, _ in band]


_chosen: RunQueues | None = None


def queues() -> RunQueues:
    return _chosen or SqsRunQueues()


def use(chosen: RunQueues | None) -> None:
    """Tests and the scale model hand in the run queues (None: back to SQS)."""
    global _chosen
    _chosen = chosen


def send_all(sends: list[Send]) -> set[str]:
    """Send in batches of BATCH per band; returns the run ids the queues accepted."""
    by_band: dict[str, list[Send]] = defaultdict(list)
    for s in sends:
        by_band[s.band].append(s)
    ok: set[str] = set()
    q = queues()
    for band, items in by_band.items():
        for i in range(0, len(items), BATCH):
            ok |= q.send_batch(band, items[i : i + BATCH])
    return ok
