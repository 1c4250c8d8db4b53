"""The DynamoDB adapter of the services' stores: agents (and their rate-limit buckets), events,
and claimed keys (Idempotency-Keys, AWS event ids) in the `keys` table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pynamodb.attributes import NumberAttribute
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.condition import Condition

from chalicelib.domain import budgets
from chalicelib.domain.records import Agent, AgentStatus, Event
from chalicelib.store.dynamo.mapping import agent_from_item, agent_to_item, event_from_item, event_to_item
from chalicelib.store.dynamo.tasks import conditional_failed
from chalicelib.store.models import AgentModel, EventModel, KeyModel
from chalicelib.store.ports import KeyClaim

_TAKE_ROUNDS = 8  # a round is lost only when another taker took from the bucket meanwhile


def _update(item: AgentModel | KeyModel, actions: list[Any], condition: Condition) -> bool:
    """One conditional UpdateItem: False when its condition does not hold."""
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as e:
        if conditional_failed(e):
            return False
        raise
    return True


def _bucket(name: str) -> NumberAttribute:
    if name == "events":
        return AgentModel.rl_events
    if name == "writes":
        return AgentModel.rl_writes
    if name == "runs":
        return AgentModel.rl_runs
    raise ValueError(f"no rate-limit bucket {name!r}")


class DynamoAgents:
    def get(self, agent_id: str) -> Agent | None:
        try:
            return agent_from_item(AgentModel.get(agent_id, consistent_read=True))
        except DoesNotExist:
            return None

    def put_if_absent(self, agent: Agent) -> bool:
        try:
            agent_to_item(agent).save(condition=AgentModel.agent_id.does_not_exist())
        except PutError as e:
            if conditional_failed(e):
                return False
            raise
        return True

    def all(self) -> list[Agent]:
        return [agent_from_item(a) for a in AgentModel.scan()]

    def revoke(self, agent_id: str) -> Agent | None:
        item = AgentModel(agent_id)
        if not _update(item, [AgentModel.status.set(str(AgentStatus.REVOKED))], AgentModel.agent_id.exists()):
            return None
        return agent_from_item(item)  # update() loads the item as written

    def replace_secret(self, agent_id: str, expected: str, new: str) -> bool:
        return _update(
            AgentModel(agent_id), [AgentModel.signing_secret.set(new)], AgentModel.signing_secret == expected
        )

    def set_egress(self, agent_id: str, aws_targets: Sequence[str], http_allow: Sequence[str]) -> bool:
        aws: Any = list(aws_targets)  # pynamodb types a list of strings as list[UnicodeAttribute]
        http: Any = list(http_allow)
        actions = [AgentModel.egress_aws_targets.set(aws), AgentModel.egress_http_allow.set(http)]
        return _update(AgentModel(agent_id), actions, AgentModel.agent_id.exists())

    def release_task_slot(self, agent_id: str) -> None:
        _update(AgentModel(agent_id), [AgentModel.task_count.add(-1)], AgentModel.task_count > 0)

    def set_budget(self, agent_id: str, values: Mapping[str, int | None]) -> Agent | None:
        item = AgentModel(agent_id)
        actions: list[Any] = []
        for name in budgets.FIELDS:
            attr = getattr(AgentModel, name)
            value = values.get(name)
            actions.append(attr.remove() if value is None else attr.set(value))
        if not _update(item, actions, AgentModel.agent_id.exists()):
            return None
        return agent_from_item(item)  # update() loads the item as written

    def get_with_bucket(self, agent_id: str, bucket: str) -> tuple[Agent | None, int | None]:
        attr = _bucket(bucket)
        try:
            item = AgentModel.get(agent_id, consistent_read=True)
        except DoesNotExist:
            return None, None
        value = getattr(item, attr.attr_name)
        return agent_from_item(item), None if value is None else int(value)

    def take_up_to(self, agent_id: str, bucket: str, n: int, *, now_ms: int, step_ms: int, burst: int) -> int:
        # The cheap cases first, one conditional write each: an idle bucket restarts (it is full),
        # a busy one with room for all n moves by n steps. Only then is it read, and the room it
        # has taken in one more conditional write (again, if it moved in between).
        if n <= 0:
            return 0
        allowance = (max(burst, 1) - 1) * step_ms
        full = min(n, max(burst, 1))
        for _ in range(_TAKE_ROUNDS):
            if self.restart_bucket(agent_id, bucket, now_ms + full * step_ms, idle_before_ms=now_ms):
                return full
            high = now_ms + allowance - (n - 1) * step_ms
            if high >= now_ms and self.advance_bucket(agent_id, bucket, n * step_ms, low_ms=now_ms, high_ms=high):
                return n
            current = self.bucket(agent_id, bucket)
            if current is None:
                return 0  # no such agent (a bucket never goes back to unset)
            k = min(n, budgets.room(current, now_ms, step_ms, burst))
            if k <= 0:
                return 0
            high = now_ms + allowance - (k - 1) * step_ms
            if self.advance_bucket(agent_id, bucket, k * step_ms, low_ms=now_ms, high_ms=high):
                return k
        return 0  # lost to concurrent takers every round: as if empty (they took the room)

    def restart_bucket(self, agent_id: str, bucket: str, tat_ms: int, *, idle_before_ms: int) -> bool:
        attr = _bucket(bucket)
        cond = (attr.does_not_exist() | (attr < idle_before_ms)) & AgentModel.agent_id.exists()
        return _update(AgentModel(agent_id), [attr.set(tat_ms)], cond)

    def advance_bucket(self, agent_id: str, bucket: str, step_ms: int, *, low_ms: int, high_ms: int) -> bool:
        attr = _bucket(bucket)
        cond = (attr >= low_ms) & (attr <= high_ms) & AgentModel.agent_id.exists()
        return _update(AgentModel(agent_id), [attr.add(step_ms)], cond)

    def bucket(self, agent_id: str, bucket: str) -> int | None:
        attr = _bucket(bucket)
        try:
            item = AgentModel.get(agent_id, consistent_read=True, attributes_to_get=["agent_id", attr.attr_name])
        except DoesNotExist:
            return None
        value = getattr(item, attr.attr_name)
        return None if value is None else int(value)


class DynamoEvents:
    def put(self, event: Event) -> None:
        event_to_item(event).save()

    def get(self, agent_id: str, event_id: str) -> Event | None:
        try:
            return event_from_item(EventModel.get(agent_id, event_id))
        except DoesNotExist:
            return None

    def charge_chain(self, agent_id: str, chain: str, runs: int, *, limit: int, expires_at: datetime) -> bool:
        if runs > limit:
            return False
        # In the keys table, not on the root event's item: the root's own put replaces its item.
        item = KeyModel(f"chain#{agent_id}#{chain}")
        room = KeyModel.used.does_not_exist() | (KeyModel.used <= limit - runs)
        try:
            item.update(actions=[KeyModel.used.add(runs), KeyModel.expires_at.set(expires_at)], condition=room)
        except UpdateError as e:
            if conditional_failed(e):
                return False
            raise
        return True


class DynamoKeys:
    def claim(self, key: str, value: Mapping[str, Any], *, expires_at: datetime, now: datetime) -> bool:
        item = KeyModel(key, value=dict(value) or None, expires_at=expires_at)
        try:
            item.save(condition=KeyModel.key.does_not_exist() | (KeyModel.expires_at < now))
        except PutError as e:
            if conditional_failed(e):
                return False
            raise
        return True

    def get(self, key: str, *, now: datetime) -> KeyClaim | None:
        try:
            item = KeyModel.get(key, consistent_read=True)
        except DoesNotExist:
            return None
        if item.expires_at is not None and item.expires_at < now:
            return None  # DynamoDB's TTL deletes late (up to days); moto never does
        response = item.response if isinstance(item.response, dict) else None
        return KeyClaim(item.key, dict(item.value or {}), item.expires_at, response)

    def keep_response(self, key: str, response: Mapping[str, Any]) -> bool:
        return _update(KeyModel(key), [KeyModel.response.set(dict(response))], KeyModel.key.exists())

    def release(self, key: str) -> None:
        KeyModel(key).delete()
