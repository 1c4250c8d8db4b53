"""The in-memory twin of the execution ports: the same conditions as the DynamoDB adapter,
each verb atomic under the shared lock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.domain import attempts
from chalicelib.domain.counting import Counters, mark, trimmed
from chalicelib.domain.records import Run, RunStatus
from chalicelib.store.ports import RunPage, Slot, SweepPage

# ---- runs -----------------------------------------------------------------------------------


def _as_seen(stored: Run, seen: Run) -> bool:
    return (stored.status, stored.attempt, stored.lease_until) == (seen.status, seen.attempt, seen.lease_until)


def _held(stored: Run, run: Run) -> bool:
    return stored.status is RunStatus.RUNNING and (stored.attempt, stored.lease_until) == (run.attempt, run.lease_until)


class MemoryRuns:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[tuple[str, str], Run] = {}

    def get(self, task_id: str, run_id: str) -> Run | None:
        with self._lock:
            return self.items.get((task_id, run_id))

    def put_if_absent(self, run: Run) -> bool:
        with self._lock:
            if (run.task_id, run.run_id) in self.items:
                return False
            self.items[(run.task_id, run.run_id)] = run
            return True

    def claim_run(
        self, run: Run, *, seen: Run | None, lease_until: int, now: datetime, claim: str
    ) -> attempts.ClaimOutcome:
        # Two steps, like DynamoDB (a create, then a read and a conditional update), so a race
        # between them ends the same way on both adapters.
        return attempts.claim(
            run,
            seen,
            lease_until,
            now,
            claim,
            create=self.put_if_absent,
            read=lambda: self.get(run.task_id, run.run_id),
            replace=lambda taken, seen: self._replace(taken, lambda stored: _as_seen(stored, seen)),
        )

    def save_attempt(self, claimed: Run, retrying: Run) -> bool:
        return self._replace(retrying, lambda stored: _held(stored, claimed)) or attempts.recorded(
            self.get(retrying.task_id, retrying.run_id), retrying
        )

    def finish(self, claimed: Run, final: Run) -> bool:
        return self._replace(final, lambda stored: _held(stored, claimed)) or attempts.recorded(
            self.get(final.task_id, final.run_id), final
        )

    def settle(self, seen: Run, final: Run) -> bool:
        return self._replace(final, lambda stored: _as_seen(stored, seen))

    def newest_first(self, task_id: str, *, before: str | None, limit: int, now: datetime) -> RunPage:
        with self._lock:
            live = [
                r
                for (tid, rid), r in self.items.items()
                if tid == task_id
                and (before is None or rid < before)
                and r.expires_at is not None
                and r.expires_at > now
            ]
        live.sort(key=lambda r: r.run_id, reverse=True)
        return RunPage(live[:limit], more=len(live) > limit)

    def _replace(self, run: Run, condition: Callable[[Run], bool]) -> bool:
        with self._lock:
            stored = self.items.get((run.task_id, run.run_id))
            if stored is None or not condition(stored):
                return False
            # An update keeps what it does not set (agent, expiry), as DynamoDB's UpdateItem does.
            self.items[(run.task_id, run.run_id)] = stored.evolve(
                status=run.status, doc=dict(run.doc), lease_until=run.lease_until, claim=run.claim
            )
            return True


class MemoryRunSweep:
    """Pages in key order (DynamoDB's Scan goes in its own hash order: nobody may rely on either);
    the cursor is the last key of a page, as JSON."""

    def __init__(self, runs: MemoryRuns, lock: threading.RLock | None = None) -> None:
        self._runs = runs
        self._lock = lock or threading.RLock()
        self.at: str | None = None
        self.pages = 0  # pages read, for tests of the fixed cost

    def page(self, cursor: str | None, *, limit: int) -> SweepPage:
        after = tuple(json.loads(cursor)) if cursor is not None else None
        with self._lock:
            self.pages += 1
            keys = sorted(k for k in self._runs.items if after is None or k > after)
            taken = keys[:limit]
            found = [self._runs.items[k] for k in taken]
        more = len(keys) > limit
        return SweepPage(found, json.dumps(list(taken[-1])) if more else None)

    def cursor(self) -> str | None:
        with self._lock:
            return self.at

    def keep_cursor(self, cursor: str | None) -> None:
        with self._lock:
            self.at = cursor


# ---- counters -------------------------------------------------------------------------------


@dataclass
class _Stats:
    counters: Counters = field(default_factory=Counters)
    recent: list[str] = field(default_factory=list)


class MemoryStats:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[str, _Stats] = {}

    def read(self, task_id: str) -> Counters:
        with self._lock:
            item = self.items.get(task_id)
            return item.counters if item else Counters()

    def read_many(self, task_ids: Iterable[str]) -> dict[str, Counters]:
        with self._lock:
            return {tid: self.read(tid) for tid in dict.fromkeys(task_ids)}

    def recent(self, task_id: str) -> list[str]:
        with self._lock:
            item = self.items.get(task_id)
            return list(item.recent) if item else []

    def count(self, task_id: str, run_id: str, status: str, finished_at: str) -> bool:
        m = mark(run_id)
        with self._lock:
            item = self.items.setdefault(task_id, _Stats())
            if m in item.recent:
                return False
            c = item.counters
            latest = c.last_run_at is None or c.last_run_at <= finished_at
            item.counters = Counters(
                last_run_at=finished_at if latest else c.last_run_at,
                last_run_status=status if latest else c.last_run_status,
                run_count=c.run_count + 1,
                failure_count=c.failure_count + (status == "failed"),
            )
            item.recent.append(m)
            old = trimmed(item.recent)
            if old is not None:
                del item.recent[: len(old)]
            return True


# ---- dedupe windows and concurrency slots ---------------------------------------------------


@dataclass(frozen=True)
class _Lease:
    holder: str
    until: int


class MemoryLeases:
    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self.items: dict[str, _Lease] = {}

    def take_dedupe(self, agent_id: str, key: str, holder: str, *, now: int, window: int) -> bool:
        k = f"dedupe#{agent_id}#{key}"
        with self._lock:
            cur = self.items.get(k)
            if cur is not None and cur.until > now and cur.holder != holder:
                return False
            self.items[k] = _Lease(holder, now + window)
            return True

    def acquire_slot(self, agent_id: str, key: str, limit: int, holder: str, *, now: int, lease: int) -> Slot | None:
        with self._lock:
            for held in (False, True):
                for i in range(limit):
                    k = f"conc#{agent_id}#{key}#{i}"
                    cur = self.items.get(k)
                    ok = (cur is not None and cur.holder == holder) if held else (cur is None or cur.until < now)
                    if ok:
                        self.items[k] = _Lease(holder, now + lease)
                        return Slot(k, fresh=not held)
            return None

    def release_slot(self, slot: Slot, holder: str) -> None:
        with self._lock:
            cur = self.items.get(slot.key)
            if cur is not None and cur.holder == holder:
                del self.items[slot.key]
