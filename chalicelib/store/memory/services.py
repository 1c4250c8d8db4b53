"""The in-memory stores of the services: agents (and their rate-limit buckets), events and
claimed keys, with the DynamoDB adapter's conditional semantics under one lock."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from chalicelib.domain import budgets
from chalicelib.domain.records import Agent, AgentStatus, Event
from chalicelib.store.ports import KeyClaim

BUCKETS = ("writes", "events", "runs")


class MemoryAgents:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[str, Agent] = {}
        self.buckets: dict[tuple[str, str], int] = {}

    def get(self, agent_id: str) -> Agent | None:
        with self._lock:
            return self.items.get(agent_id)

    def put_if_absent(self, agent: Agent) -> bool:
        with self._lock:
            if agent.agent_id in self.items:
                return False
            self.items[agent.agent_id] = agent
            return True

    def all(self) -> list[Agent]:
        with self._lock:
            return list(self.items.values())

    def revoke(self, agent_id: str) -> Agent | None:
        with self._lock:
            agent = self.items.get(agent_id)
            if agent is None:
                return None
            self.items[agent_id] = agent = replace(agent, status=AgentStatus.REVOKED)
            return agent

    def replace_secret(self, agent_id: str, expected: str, new: str) -> bool:
        with self._lock:
            agent = self.items.get(agent_id)
            if agent is None or agent.signing_secret != expected:
                return False
            self.items[agent_id] = replace(agent, signing_secret=new)
            return True

    def set_egress(self, agent_id: str, aws_targets: Sequence[str], http_allow: Sequence[str]) -> bool:
        with self._lock:
            agent = self.items.get(agent_id)
            if agent is None:
                return False
            self.items[agent_id] = replace(
                agent, egress_aws_targets=tuple(aws_targets), egress_http_allow=tuple(http_allow)
            )
            return True

    def release_task_slot(self, agent_id: str) -> None:
        with self._lock:
            agent = self.items.get(agent_id)
            if agent is not None and agent.task_count > 0:
                self.items[agent_id] = replace(agent, task_count=agent.task_count - 1)

    def set_budget(self, agent_id: str, values: Mapping[str, int | None]) -> Agent | None:
        with self._lock:
            agent = self.items.get(agent_id)
            if agent is None:
                return None
            fields: dict[str, Any] = {name: values.get(name) for name in budgets.FIELDS}
            self.items[agent_id] = agent = replace(agent, **fields)
            return agent

    def get_with_bucket(self, agent_id: str, bucket: str) -> tuple[Agent | None, int | None]:
        self._check(bucket)
        with self._lock:
            return self.items.get(agent_id), self.buckets.get((agent_id, bucket))

    def take_up_to(self, agent_id: str, bucket: str, n: int, *, now_ms: int, step_ms: int, burst: int) -> int:
        self._check(bucket)
        with self._lock:
            if agent_id not in self.items or n <= 0:
                return 0
            current = self.buckets.get((agent_id, bucket))
            k = min(n, budgets.room(current, now_ms, step_ms, burst))
            if k > 0:
                self.buckets[agent_id, bucket] = max(current or now_ms, now_ms) + k * step_ms
            return k

    def _check(self, bucket: str) -> None:
        if bucket not in BUCKETS:
            raise ValueError(f"no rate-limit bucket {bucket!r}")

    def restart_bucket(self, agent_id: str, bucket: str, tat_ms: int, *, idle_before_ms: int) -> bool:
        self._check(bucket)
        with self._lock:
            current = self.buckets.get((agent_id, bucket))
            if agent_id not in self.items or (current is not None and current >= idle_before_ms):
                return False
            self.buckets[agent_id, bucket] = tat_ms
            return True

    def advance_bucket(self, agent_id: str, bucket: str, step_ms: int, *, low_ms: int, high_ms: int) -> bool:
        self._check(bucket)
        with self._lock:
            current = self.buckets.get((agent_id, bucket))
            if agent_id not in self.items or current is None or not low_ms <= current <= high_ms:
                return False
            self.buckets[agent_id, bucket] = current + step_ms
            return True

    def bucket(self, agent_id: str, bucket: str) -> int | None:
        self._check(bucket)
        with self._lock:
            return self.buckets.get((agent_id, bucket))


class MemoryEvents:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[tuple[str, str], Event] = {}
        self.chains: dict[tuple[str, str], int] = {}  # (agent, chain) -> runs its events started

    def put(self, event: Event) -> None:
        with self._lock:
            self.items[event.agent_id, event.event_id] = event

    def get(self, agent_id: str, event_id: str) -> Event | None:
        with self._lock:
            return self.items.get((agent_id, event_id))

    def charge_chain(self, agent_id: str, chain: str, runs: int, *, limit: int, expires_at: datetime) -> bool:
        with self._lock:
            used = self.chains.get((agent_id, chain), 0)
            if used + runs > limit:
                return False
            self.chains[agent_id, chain] = used + runs
            return True


class MemoryKeys:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[str, KeyClaim] = {}

    def claim(self, key: str, value: Mapping[str, Any], *, expires_at: datetime, now: datetime) -> bool:
        with self._lock:
            held = self.items.get(key)
            if held is not None and not (held.expires_at is not None and held.expires_at < now):
                return False
            self.items[key] = KeyClaim(key, dict(value), expires_at)
            return True

    def get(self, key: str, *, now: datetime) -> KeyClaim | None:
        with self._lock:
            held = self.items.get(key)
        if held is None or (held.expires_at is not None and held.expires_at < now):
            return None
        return held

    def keep_response(self, key: str, response: Mapping[str, Any]) -> bool:
        with self._lock:
            held = self.items.get(key)
            if held is None:
                return False
            self.items[key] = replace(held, response=dict(response))
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self.items.pop(key, None)
