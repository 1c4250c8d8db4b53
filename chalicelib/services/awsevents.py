"""AWS events in: an optional EventBridge rule feeds matching AWS events (S3, CodePipeline, ...)
to the `aws_events` function, which publishes each as an internal event for one agent chosen by
the operator, so that agent's event tasks react to them.

The rule and its pattern are set at deploy time (stack parameters `AwsEventsPattern` and
`AwsEventsAgent`, see docs/deploy.md); with no pattern there is no rule and nothing calls this.
The rule's input transformer hands over `{"agent_id": "<agent>", "event": <the AWS event>}`.

- Name: `aws.<service>.<detail type>`, lower case, other characters as `_`: an S3 "Object
  Created" event is `aws.s3.object_created`, a CodePipeline "CodePipeline Pipeline Execution
  State Change" is `aws.codepipeline.codepipeline_pipeline_execution_state_change`. Event
  tasks listen with patterns such as `aws.s3.*` or `aws.*`.
- Data: the AWS event's `id`, `source`, `detail_type`, `account`, `region`, `time`,
  `resources` and `detail` (left out, with `detail_truncated: true`, when over the 64 KiB an
  internal event may carry).
- EventBridge delivers at least once: the AWS event id is claimed with a conditional write
  (kept a day) before publishing, so a redelivery starts nothing twice.
- Misconfiguration (no agent, a revoked agent, not an EventBridge event) is logged and dropped:
  an error would only make Lambda retry what can never succeed. Storage and queue errors raise,
  so Lambda's retries of the asynchronous invocation apply.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.records import AgentStatus
from chalicelib.platform.log import logger
from chalicelib.services import events
from chalicelib.store import stores

CLAIM_TTL = timedelta(days=1)
NAME_LIMIT = 256


def event_name(source: str, detail_type: str) -> str:
    service = source.removeprefix("aws.") if source.startswith("aws.") else source
    slug = re.sub(r"[^a-z0-9]+", "_", detail_type.lower()).strip("_") or "event"
    name = re.sub(r"[^A-Za-z0-9._:-]+", "_", f"aws.{service.lower()}.{slug}")
    return name[:NAME_LIMIT]


def event_data(aws_event: dict[str, Any]) -> dict[str, Any]:
    data = {
        "id": aws_event.get("id"),
        "source": aws_event.get("source"),
        "detail_type": aws_event.get("detail-type"),
        "account": aws_event.get("account"),
        "region": aws_event.get("region"),
        "time": aws_event.get("time"),
        "resources": aws_event.get("resources") or [],
        "detail": aws_event.get("detail") or {},
    }
    if len(json.dumps(data, separators=(",", ":"))) > events.MAX_DATA_BYTES:
        data["detail"], data["detail_truncated"] = None, True
    return data


def _drop(reason: str, **extra: Any) -> dict[str, Any]:
    logger.warning("aws_event_dropped", extra={"reason": reason, **extra})
    return {"published": None, "dropped": reason}


def handle(payload: Any, now: datetime) -> dict[str, Any]:
    """Publish one AWS event (as the rule's input transformer wraps it) for its agent."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict):
        return _drop("not_an_eventbridge_delivery")
    aws_event = payload["event"]
    try:
        agent_id = str(uuid.UUID(str(payload.get("agent_id"))))
    except ValueError:
        return _drop("no_agent", agent_id=str(payload.get("agent_id"))[:64])
    source, detail_type, event_id = aws_event.get("source"), aws_event.get("detail-type"), aws_event.get("id")
    if not (isinstance(source, str) and isinstance(detail_type, str) and isinstance(event_id, str)) or not event_id:
        return _drop("not_an_aws_event", agent_id=agent_id)
    agent = stores().agents.get(agent_id)
    if agent is None:
        return _drop("unknown_agent", agent_id=agent_id)
    if agent.status is not AgentStatus.ACTIVE:
        return _drop("agent_revoked", agent_id=agent_id)
    claim = f"awsevent#{agent_id}#{event_id[:200]}"
    if not stores().keys.claim(claim, {}, expires_at=now + CLAIM_TTL, now=now):
        logger.info("aws_event_duplicate", extra={"agent_id": agent_id, "aws_event_id": event_id})
        return {"published": None, "duplicate": True}
    name = event_name(source, detail_type)
    try:
        result = events.publish(agent_id, name, event_data(aws_event), depth=0, now=now)
    except Exception:
        stores().keys.release(claim)  # let Lambda's retry publish it
        raise
    logger.info(
        "aws_event_published",
        extra={"agent_id": agent_id, "event_name": name, "event_id": result["event_id"], "runs": len(result["runs"])},
    )
    return {"published": result["event_id"], "name": name, "runs": result["runs"]}
