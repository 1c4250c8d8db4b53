"""The state journal inside moto (in-process here, the same handlers as the server): writes made
through the API are journaled as the items they leave, SQS messages with their delay, and a new
emulator gets them back, also across a compaction."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from local import atomic, state
from local.state import Journal, Store

TABLE = "test-keys"


@pytest.fixture()
def journal(env: None, tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state", "us-east-1", flush_seconds=3600)  # flushed by the test
    atomic.after_write(j.after_write)
    try:
        yield j
    finally:
        atomic.after_write(None)
        j._stop.set()


def _wait_for_base(j: Journal) -> None:
    deadline = time.monotonic() + 30
    while j._journal is None:
        assert time.monotonic() < deadline, "the journal thread did not write the restored base"
        time.sleep(0.05)


def _empty_emulator() -> None:
    from moto.dynamodb.models import dynamodb_backends
    from moto.sqs.models import sqs_backends

    for table in dynamodb_backends["123456789012"]["us-east-1"].tables.values():
        table.items.clear()
    for q in sqs_backends["123456789012"]["us-east-1"].queues.values():
        with q._messages_lock:
            q._messages.clear()


def test_writes_and_messages_survive_into_a_new_emulator(journal: Journal, tmp_path: Path, monkeypatch):
    # GIVEN a journal that has restored (nothing) and is recording
    assert journal.restore()["items"] == 0
    _wait_for_base(journal)
    ddb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="test-runs-normal")["QueueUrl"]
    # WHEN items are put, updated, deleted (single and batch) and a delayed message is sent
    ddb.put_item(TableName=TABLE, Item={"key": {"S": "a"}, "value": {"S": json.dumps({"n": 1})}})
    ddb.update_item(
        TableName=TABLE,
        Key={"key": {"S": "a"}},
        UpdateExpression="SET #v = :v",
        ExpressionAttributeNames={"#v": "value"},
        ExpressionAttributeValues={":v": {"S": "updated"}},
    )
    ddb.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": {"key": {"S": f"b{i}"}}}} for i in range(25)]})
    ddb.delete_item(TableName=TABLE, Key={"key": {"S": "b0"}})
    sqs.send_message(QueueUrl=url, MessageBody="run-1", DelaySeconds=600)
    journal.flush()
    # ... one more write lands in a second frame, then the journal is compacted
    ddb.put_item(TableName=TABLE, Item={"key": {"S": "c"}, "holder": {"S": "w"}, "until": {"N": str(2**40)}})
    monkeypatch.setattr(state, "COMPACT_MIN_BYTES", 1)
    journal.flush()
    store = Store(tmp_path / "state")
    assert store.generation() == 2, "compacted into a new generation"
    journal._stop.set()

    # THEN a fresh emulator restored from the directory has exactly those items and the message
    _empty_emulator()
    again = Journal(tmp_path / "state", "us-east-1", flush_seconds=3600)
    report = again.restore()
    again._stop.set()
    keys = {i["key"]["S"]: i for i in ddb.scan(TableName=TABLE)["Items"]}
    assert set(keys) == {"a", "c", *(f"b{i}" for i in range(1, 25))}, report
    assert keys["a"]["value"] == {"S": "updated"}
    assert int(keys["c"]["until"]["N"]) < time.time(), "a lease of the stopped process ends"
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1", "still delayed after the restore"
    assert report["messages"] == 1 and not report["torn_frame_ignored"]
