"""The events Lambda hands to our functions, built from what the emulated services return,
so the handlers see locally exactly the shapes they see deployed."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from chalice.local import LambdaContext

ACCOUNT_ID = "123456789012"  # moto's default account


def scheduled_event(scheduled_for: datetime, rule_arn: str, region: str) -> dict[str, Any]:
    """An EventBridge "Scheduled Event" as a rate()/cron() rule delivers it to Lambda."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": rule_arn.split(":")[4] if rule_arn.count(":") >= 5 else ACCOUNT_ID,
        "time": scheduled_for.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def rule_arn(rule_name: str, region: str, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:events:{region}:{account}:rule/{rule_name}"


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()


def _message_attribute(attr: Mapping[str, Any]) -> dict[str, Any]:
    """ReceiveMessage's MessageAttributeValue → Lambda's camelCase record attribute
    (binary values base64-encoded, as Lambda's JSON carries them)."""
    out: dict[str, Any] = {
        "stringListValues": list(attr.get("StringListValues") or []),
        "binaryListValues": [_b64(v) for v in attr.get("BinaryListValues") or []],
        "dataType": attr["DataType"],
    }
    if "StringValue" in attr:
        out["stringValue"] = attr["StringValue"]
    if "BinaryValue" in attr:
        out["binaryValue"] = _b64(attr["BinaryValue"])
    return out


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    body = message["Body"]
    attrs = dict(message.get("Attributes") or {})
    message_attributes = message.get("MessageAttributes") or {}
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": attrs,
        "messageAttributes": {k: _message_attribute(v) for k, v in message_attributes.items()},
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "md5OfMessageAttributes": message.get("MD5OfMessageAttributes"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event of an SQS event source mapping: one record per received message, in order."""
    return {"Records": [sqs_record(m, queue_arn, region) for m in messages]}


def lambda_context(function_name: str, timeout_seconds: int, memory_mb: int = 128) -> LambdaContext:
    """Chalice's local stand-in for Lambda's context object (request id, remaining time...)."""
    return LambdaContext(function_name, memory_mb, max_runtime_ms=timeout_seconds * 1000)


def failed_ids(response: Any, batch_ids: Sequence[str]) -> set[str] | None:
    """The message ids a worker reported as failed (ReportBatchItemFailures).

    None means "the whole batch failed": Lambda treats a response that names an id outside the
    batch, an empty/missing identifier, or a response that is not an object, as a failure of every
    record. No response, or one without `batchItemFailures` (or with an empty list), is a success.
    """
    if response is None:
        return set()
    if not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    known = set(batch_ids)
    out: set[str] = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not ident or ident not in known:
            return None
        out.add(str(ident))
    return out
