"""The DynamoDB adapter of the execution ports: run records (RunModel), a task's counters
(StatsModel) and dedupe windows / concurrency slots (KeyModel). Each conditional verb is one
conditional write; its failure is an outcome, never an exception."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError
from pynamodb.expressions.condition import Condition

from chalicelib.domain import attempts
from chalicelib.domain.counting import Counters, mark, trimmed
from chalicelib.domain.records import Run, RunStatus
from chalicelib.domain.timefmt import from_epoch
from chalicelib.store.models import KeyModel, RunModel, StatsModel
from chalicelib.store.ports import RunPage, Slot, SweepPage

BATCH = 100  # BatchGetItem's limit


def _lost(e: PutError | UpdateError) -> bool:
    """A failed condition (an outcome); anything else is a storage failure and raises."""
    return e.cause_response_code == "ConditionalCheckFailedException"


# ---- runs -----------------------------------------------------------------------------------


def run_from_item(item: RunModel) -> Run:
    return Run(
        task_id=item.task_id,
        run_id=item.run_id,
        agent_id=item.agent_id,
        status=RunStatus(item.status),
        doc=item.doc or {},
        lease_until=None if item.lease_until is None else int(item.lease_until),
        expires_at=item.expires_at,
        claim=item.claim,
    )


def run_to_item(run: Run) -> RunModel:
    return RunModel(
        run.task_id,
        run.run_id,
        agent_id=run.agent_id,
        doc=dict(run.doc),
        status=str(run.status),
        attempt=run.attempt,
        lease_until=run.lease_until,
        expires_at=run.expires_at,
        claim=run.claim,
    )


def _as_seen(seen: Run) -> Any:
    """The stored run is still as `seen`: status, attempt and lease (a record written before
    `attempt` was stored lacks it; status and lease fence those as before)."""
    cond = RunModel.status == str(seen.status)
    cond &= (RunModel.attempt == seen.attempt) | RunModel.attempt.does_not_exist()
    lease = RunModel.lease_until
    return cond & (lease.does_not_exist() if seen.lease_until is None else (lease == seen.lease_until))


def _held(run: Run) -> Any:
    """The worker that claimed this attempt still holds it: running, at this attempt, this lease."""
    return (
        (RunModel.status == str(RunStatus.RUNNING))
        & (RunModel.attempt == run.attempt)
        & (RunModel.lease_until == (run.lease_until or 0))
    )


class DynamoRuns:
    def get(self, task_id: str, run_id: str) -> Run | None:
        try:
            return run_from_item(RunModel.get(task_id, run_id, consistent_read=True))
        except DoesNotExist:
            return None

    def put_if_absent(self, run: Run) -> bool:
        try:
            run_to_item(run).save(condition=RunModel.run_id.does_not_exist())
        except PutError as e:
            if _lost(e):
                return False
            raise
        return True

    def claim_run(
        self, run: Run, *, seen: Run | None, lease_until: int, now: datetime, claim: str
    ) -> attempts.ClaimOutcome:
        # PynamoDB 6.1's save cannot ask for ALL_OLD on a failed condition: a failed create reads.
        return attempts.claim(
            run,
            seen,
            lease_until,
            now,
            claim,
            create=self.put_if_absent,
            read=lambda: self.get(run.task_id, run.run_id),
            replace=lambda taken, seen: self._update(taken, _as_seen(seen)),
        )

    def save_attempt(self, claimed: Run, retrying: Run) -> bool:
        return self._update(retrying, _held(claimed)) or attempts.recorded(
            self.get(retrying.task_id, retrying.run_id), retrying
        )

    def finish(self, claimed: Run, final: Run) -> bool:
        return self._update(final, _held(claimed)) or attempts.recorded(self.get(final.task_id, final.run_id), final)

    def settle(self, seen: Run, final: Run) -> bool:
        return self._update(final, _as_seen(seen))

    def newest_first(self, task_id: str, *, before: str | None, limit: int, now: datetime) -> RunPage:
        cond = None if before is None else RunModel.run_id < before
        out: list[Run] = []
        for item in RunModel.query(
            task_id, cond, scan_index_forward=False, consistent_read=True, filter_condition=RunModel.expires_at > now
        ):
            if len(out) == limit:
                return RunPage(out, more=True)
            out.append(run_from_item(item))
        return RunPage(out, more=False)

    def _update(self, run: Run, condition: Condition) -> bool:
        lease: Any = (
            RunModel.lease_until.remove() if run.lease_until is None else RunModel.lease_until.set(run.lease_until)
        )
        actions = [
            RunModel.doc.set(dict(run.doc)),
            RunModel.status.set(str(run.status)),
            RunModel.attempt.set(run.attempt),
            RunModel.claim.remove() if run.claim is None else RunModel.claim.set(run.claim),
            lease,
        ]
        try:
            RunModel(run.task_id, run.run_id).update(actions=actions, condition=condition)
        except UpdateError as e:
            if _lost(e):
                return False
            raise
        return True


SWEEP_KEY = "tick#sweep"  # in the keys table, next to the shard leases: where the sweep's pass stands


class DynamoRunSweep:
    """One Scan request a page (eventually consistent: half the read units, and the sweep re-reads
    a run consistently before it fails it); the cursor is the Scan's LastEvaluatedKey as JSON."""

    def page(self, cursor: str | None, *, limit: int) -> SweepPage:
        start = _decoded(cursor)
        found = RunModel.scan(page_size=limit, last_evaluated_key=start, consistent_read=False)
        # One request, not the iterator's next ones: its pages are read here, the first only.
        raw = next(found.page_iter, None)
        items = [] if raw is None else raw.get("Items") or []
        after = found.page_iter.last_evaluated_key
        runs = [run_from_item(RunModel.from_raw_data(item)) for item in items]
        return SweepPage(runs, None if not after else json.dumps(after, sort_keys=True, separators=(",", ":")))

    def cursor(self) -> str | None:
        try:
            return KeyModel.get(SWEEP_KEY, consistent_read=True).through
        except KeyModel.DoesNotExist:
            return None

    def keep_cursor(self, cursor: str | None) -> None:
        KeyModel(SWEEP_KEY, through=cursor).save()


def _decoded(cursor: str | None) -> dict[str, Any] | None:
    """A stored cursor as the Scan's ExclusiveStartKey; one that does not decode starts over."""
    if cursor is None:
        return None
    try:
        key = json.loads(cursor)
    except ValueError:
        return None
    ok = isinstance(key, dict) and set(key) == {"task_id", "run_id"}
    return key if ok and all(isinstance(v, dict) and isinstance(v.get("S"), str) for v in key.values()) else None


# ---- counters -------------------------------------------------------------------------------


def _counters(item: StatsModel) -> Counters:
    return Counters(item.last_run_at, item.last_run_status, int(item.run_count or 0), int(item.failure_count or 0))


class DynamoStats:
    """One UpdateItem per count (see `store/counters.py`), plus one trim every
    RECENT_MAX - RECENT_KEEP counts."""

    def read(self, task_id: str) -> Counters:
        try:
            return _counters(StatsModel.get(task_id, consistent_read=True))
        except StatsModel.DoesNotExist:
            return Counters()

    def read_many(self, task_ids: Iterable[str]) -> dict[str, Counters]:
        ids = list(dict.fromkeys(task_ids))
        found = {
            item.task_id: _counters(item)
            for i in range(0, len(ids), BATCH)
            for item in StatsModel.batch_get(ids[i : i + BATCH], consistent_read=True)
        }
        return {tid: found.get(tid, Counters()) for tid in ids}

    def recent(self, task_id: str) -> list[str]:
        try:
            return [str(m) for m in StatsModel.get(task_id, consistent_read=True).recent or []]
        except StatsModel.DoesNotExist:
            return []

    def count(self, task_id: str, run_id: str, status: str, finished_at: str) -> bool:
        item, m = StatsModel(task_id), mark(run_id)
        adds: list[Any] = [StatsModel.run_count.add(1), StatsModel.recent.set((StatsModel.recent | []).append([m]))]
        if status == "failed":
            adds.append(StatsModel.failure_count.add(1))
        fresh = ~StatsModel.recent.contains(m)
        latest = StatsModel.last_run_at.does_not_exist() | (StatsModel.last_run_at <= finished_at)
        try:
            item.update(
                actions=[*adds, StatsModel.last_run_at.set(finished_at), StatsModel.last_run_status.set(status)],
                condition=fresh & latest,
            )
        except UpdateError as e:
            if not _lost(e):
                raise
            # Counted already, or a run that finished later was counted first (rare: two runs of
            # one task finishing together): count without moving the last run back.
            try:
                item.update(actions=adds, condition=fresh)
            except UpdateError as e2:
                if _lost(e2):
                    return False
                raise
        self._trim(item)
        return True

    def _trim(self, item: StatsModel) -> None:
        """Drop the oldest marks once `recent` outgrows RECENT_MAX. Appends go to the end, so the
        condition pins the prefix removed: a concurrent append survives, a concurrent trim makes
        this one fail harmlessly (the next count trims if still needed)."""
        old = trimmed([str(m) for m in item.recent or []])  # as returned by the count's update (ALL_NEW)
        if old is None:
            return
        cond = None
        for i, m in enumerate(old):
            c = StatsModel.recent[i] == m
            cond = c if cond is None else cond & c
        try:
            item.update(actions=[StatsModel.recent[i].remove() for i in range(len(old))], condition=cond)
        except UpdateError as e:
            if not _lost(e):
                raise


# ---- dedupe windows and concurrency slots ---------------------------------------------------


def slot_key(agent_id: str, key: str, i: int) -> str:
    return f"conc#{agent_id}#{key}#{i}"


def dedupe_key(agent_id: str, key: str) -> str:
    return f"dedupe#{agent_id}#{key}"


class DynamoLeases:
    def take_dedupe(self, agent_id: str, key: str, holder: str, *, now: int, window: int) -> bool:
        rec = KeyModel(
            dedupe_key(agent_id, key), holder=holder, until=now + window, expires_at=from_epoch(now + window)
        )
        try:
            rec.save(condition=KeyModel.key.does_not_exist() | (KeyModel.until <= now) | (KeyModel.holder == holder))
        except PutError as e:
            if _lost(e):
                return False
            raise
        return True

    def acquire_slot(self, agent_id: str, key: str, limit: int, holder: str, *, now: int, lease: int) -> Slot | None:
        # A free (or expired) slot first; else the one the holder holds already (a copy of a run
        # that holds it: not fresh, so that copy does not release it).
        expires = from_epoch(now) + timedelta(seconds=lease + 3600)
        for held in (False, True):
            for i in range(limit):
                k = slot_key(agent_id, key, i)
                cond = (KeyModel.holder == holder) if held else (KeyModel.key.does_not_exist() | (KeyModel.until < now))
                try:
                    KeyModel(k, holder=holder, until=now + lease, expires_at=expires).save(condition=cond)
                except PutError as e:
                    if _lost(e):
                        continue
                    raise
                return Slot(k, fresh=not held)
        return None

    def release_slot(self, slot: Slot, holder: str) -> None:
        try:
            KeyModel(slot.key).delete(condition=KeyModel.holder == holder)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass
