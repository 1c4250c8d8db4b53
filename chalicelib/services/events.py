"""Events: POST /events and `emit` steps start the caller's matching event tasks.

Matching never scans: an event task with pattern P is indexed under "<agent>#P", and an
event named a.b.c can only match the patterns a.b.c, a.*, a.b.*, and *, so an event costs
one index query per dot in its name (plus two), whatever the number of stored tasks.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from chalicelib import dispatch
from chalicelib.dispatch import budgets
from chalicelib.domain.contracts import EventCreate
from chalicelib.domain.errors import InvalidInput, StepFailed, TooLarge
from chalicelib.domain.records import Agent, Event, TaskStatus, Trigger
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch, iso
from chalicelib.domain.validation import parse, stored_size
from chalicelib.platform.config import band_for, settings
from chalicelib.platform.log import logger
from chalicelib.services.agents import Caller
from chalicelib.store import runs, stores

MAX_DATA_BYTES = 64 * 1024


def candidate_patterns(name: str) -> list[str]:
    parts = name.split(".")
    return [name, *(".".join(parts[:i]) + ".*" for i in range(1, len(parts))), "*"]


class ChainTooBroad(Exception):
    """The event's fan-out would take its chain past `TASKAPI_EVENT_CHAIN_MAX_RUNS` runs."""


def post_event(caller: Caller, data: Any, now: datetime, depth: int = 0, chain: str | None = None) -> dict[str, Any]:
    if caller.agent_id is None:
        raise InvalidInput("events belong to an agent: call POST /events with the agent's token")
    req = parse(EventCreate, data)
    if (size := stored_size(req.data)) > MAX_DATA_BYTES:
        raise TooLarge.field("data", f"is {size} bytes stored (escaped); the limit is {MAX_DATA_BYTES}")
    if depth > settings().event_chain_limit:
        raise InvalidInput.field(
            "X-Tasks-Event-Depth", f"the event chain is deeper than {settings().event_chain_limit} events (a loop?)"
        )
    try:
        return publish(caller.agent_id, req.name, req.data, depth=depth, now=now, chain=chain)
    except ChainTooBroad as e:
        raise InvalidInput.field("X-Tasks-Event-Chain", str(e)) from None


def emit(
    agent_id: str,
    name: str,
    data: Any,
    *,
    depth: int,
    now: datetime,
    key: str,
    at: int,
    chain: str | None = None,
    agent: Agent | None = None,
) -> str:
    """The `emit` step: publish an internal event for the same agent. Its id derives from
    `key` (the run and the step) and `at` (the run's instant), so a retried attempt publishes
    the same event and its listeners' runs, whose ids derive from it, are created once.
    `chain`: the chain of the emitting run (None: the emitted event starts one); `agent`: the
    emitting agent as the worker read it at the claim (None: read here if needed)."""
    if depth > settings().event_chain_limit:
        raise StepFailed(
            "chain_too_deep",
            f"event chain is deeper than {settings().event_chain_limit} emits (a loop?)",
            retryable=False,
        )
    try:
        parse(EventCreate, {"name": name, "data": data if isinstance(data, dict) else {"value": data}})
    except (InvalidInput, TooLarge) as e:
        raise StepFailed("invalid_event", e.detail, retryable=False) from None
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    try:
        published = publish(
            agent_id, name, data, depth=depth, now=now, event_id=f"{at:010d}-{digest}", chain=chain, agent=agent
        )
    except ChainTooBroad as e:
        raise StepFailed("chain_too_broad", str(e), retryable=False) from None
    return str(published["event_id"])


def publish(
    agent_id: str,
    name: str,
    data: Any,
    *,
    depth: int,
    now: datetime,
    event_id: str | None = None,
    chain: str | None = None,
    agent: Agent | None = None,
) -> dict[str, Any]:
    """Store the event and start its listeners' runs. `chain`: the root event of the chain it
    belongs to (None: it is a root itself); its runs carry the chain on."""
    republished = event_id is not None  # an `emit`: a retried attempt publishes the same id again
    event_id = event_id or f"{epoch(now):010d}-{secrets.token_hex(8)}"
    at_event = int(event_id.split("-", 1)[0])  # run ids of listeners derive from the event alone
    event = {"id": event_id, "name": name, "data": data, "time": iso(now)}
    keys = [f"{agent_id}#{pattern}" for pattern in candidate_patterns(name)]
    started: list[dict[str, str]] = []
    sends: list[dispatch.Send] = []
    listeners = [
        t for t in stores().tasks.by_event_key(keys) if t.status is TaskStatus.ACTIVE and t.created_by == agent_id
    ]
    chain = chain or event_id
    if agent is None and listeners:
        agent = stores().agents.get(agent_id)
    limits = budgets.limits_of(agent)
    # One charge for the whole fan-out; the oldest listeners go first. A retried `emit` publishes
    # the same event again: its runs were charged (or skipped) the first time, never twice.
    again = bool(listeners) and republished and stores().events.get(agent_id, event_id) is not None
    if not again:
        _charge_chain(agent_id, chain, len(listeners), depth, now)  # first: a refused fan-out spends no budget
    admitted = len(listeners) if again else budgets.take(agent, len(listeners), now)
    for n, task in enumerate(listeners):
        at = epoch(now)
        if task.snoozed_until and task.snoozed_until > iso(now):
            at = epoch(datetime.fromisoformat(task.snoozed_until.replace("Z", "+00:00")))
        msg = RunMessage(
            task.task_id,
            runs.event_run_id(at_event, event_id, task.task_id),
            agent_id,
            str(Trigger.EVENT),
            at,
            None,
            event_id,
            depth,
            limits.runs_in_flight,
            chain,
        )
        doc = runs.first_doc(
            msg, admitted=n < admitted, max_attempts=task.definition.max_attempts, now=now, event=event
        )
        runs.put_new(msg, doc, now)
        if n < admitted:
            sends.append(dispatch.Send(msg, band_for(task.definition.priority)))
            started.append({"task_id": task.task_id, "run_id": msg.run_id})
        else:
            started.append({"task_id": task.task_id, "run_id": msg.run_id, "skip_reason": doc["skip_reason"]})
    stores().events.put(
        Event(
            agent_id=agent_id,
            event_id=event_id,
            name=name,
            data=data,
            time=iso(now),
            runs=tuple(started),
            depth=depth,
            expires_at=now + timedelta(days=settings().run_retention_days),
        )
    )
    if admitted < len(listeners):
        logger.warning(
            "runs_over_budget", extra={"agent_id": agent_id, "skipped": len(listeners) - admitted, "at": "event"}
        )
    if sends:
        accepted = dispatch.send_all(sends)
        for send in sends:
            if send.message.run_id not in accepted:
                runs.fail_unqueued(send.message, now, "SQS did not accept the run message")
    return {"event_id": event_id, "runs": started}


def _charge_chain(agent_id: str, chain: str, runs: int, depth: int, now: datetime) -> None:
    """Breadth: the runs one chain's events start, in total, stay within
    `TASKAPI_EVENT_CHAIN_MAX_RUNS` (depth alone lets 5 listeners that emit make 5^10 runs). One
    conditional write per fan-out that starts runs, none per run; an agent's own event (depth
    0: POST /events, an AWS event) is the chain's root, and its fan-out is not charged. A
    retried attempt's emit (the same event again) is not charged again."""
    if depth < 1 or runs == 0:
        return
    limit = settings().event_chain_max_runs
    expires = now + timedelta(days=settings().run_retention_days)  # as long as its runs' records
    if not stores().events.charge_chain(agent_id, chain, runs, limit=limit, expires_at=expires):
        raise ChainTooBroad(
            f"the event chain {chain} would start more than {limit} runs with this event's {runs} (a loop?)"
        )


def load(agent_id: str, event_id: str) -> dict[str, Any] | None:
    """The event as a run's context shows it (id, name, data, time)."""
    event = stores().events.get(agent_id, event_id)
    if event is None:
        return None
    return {"id": event.event_id, "name": event.name, "data": event.data, "time": event.time}
