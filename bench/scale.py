"""The scale model: how many fires a minute one deployment's tick sustains, and what breaks first.

The tick's own code (`chalicelib.dispatch.tick.tick_shard`, planning, settling) runs on the
in-memory stores over 1,000,000 stored tasks, of which F fire every minute (spread over the
minute by their jitter) and the rest once a day. Each storage request and SQS send is charged
in simulated time, on the clock of the lane (one of the tick's worker threads) that works the
shard, with:
- latency: DynamoDB `--ddb-ms` per request (single-digit ms), SQS `--sqs-ms` per SendMessageBatch;
- DynamoDB's per-partition-key ceilings: 1,000 WCU/s and 3,000 RCU/s; a shard's `due` partition
  is one key. A request past a ceiling waits for the next second with room (the SDK's retries);
- the tick's CPU: the CPU the code used (measured here) at the Lambda's vCPU share
  (`--lambda-mb` / 1,769 MB per vCPU), added to the lane's clock as it runs.
Shards go to lanes as the tick's thread pool hands them out (`--lanes`, the tick's
MAX_PARALLEL_SHARDS as deployed); each lane's shards run one after another in simulated time.

A load is sustained when, in every simulated tick (steady state: the previous tick's watermark
and entries in place), every shard dispatches its whole window (nothing left by the 45 s shard
budget), the tick ends inside the Lambda's 55 s timeout, p99 lateness of a send against its fire
instant is within 1.0 s (dispatch_lag_p99_s's goal), and the CPU fits the Lambda's share.

Writes scale_fires_per_minute_ceiling, scale_due_shards_needed, scale_breaks_first and the
what-if figures (a thread per shard on a 1-vCPU tick) into bench/results.json.
Usage: python bench/scale.py [--stored 1000000] [--shards 8,16,32] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from common import write_results

os.environ.setdefault("TASKAPI_PREFIX", "scale-")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")  # an out-of-time shard logs per page

from chalicelib import store
from chalicelib.dispatch import plan as planning
from chalicelib.dispatch import queue, tick
from chalicelib.dispatch.plan import Send
from chalicelib.domain.records import Definition, Schedule, ScheduleKind, Task, TaskStatus
from chalicelib.domain.timefmt import epoch
from chalicelib.platform import config, wiring
from chalicelib.store.ports import Acquired, DueEntry, DueFire, HeldElsewhere, slot_of

WCU_PER_KEY = 1000  # per partition key and second
RCU_PER_KEY = 3000
VCPU_MB = 1769  # Lambda gives a full vCPU at this memory size
LAMBDA_TIMEOUT = 55  # .chalice/config.json: the tick's lambda_timeout
LAG_GOAL = 1.0  # dispatch_lag_p99_s's goal
EVENTBRIDGE_PER_MINUTE = 60_000  # EventBridge Scheduler's default quota: 1,000 invocations a second
# Item sizes (bytes) that set the capacity units a request takes.
DUE_ITEM = 130  # shard, slot, task id, fire, schedule version, expiry
TASK_ITEM = 1_500  # a task with a small pipeline
KEY_ITEM = 100  # a lease or a watermark
QUERY_PAGE = 1 << 20  # DynamoDB returns a query in pages of up to 1 MB

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
CREATED = "2027-03-01T00:00:00Z"
EVERY_MINUTE = Schedule(ScheduleKind.CRON, "* * * * *", "UTC", jitter_seconds=59, anchor=CREATED)
DAILY = Schedule(ScheduleKind.CRON, "0 3 * * *", "UTC", anchor=CREATED)
DEFINITION = Definition("report", "", {"steps": [{"id": "s", "type": "log", "message": "hi"}]}, 5, 2, "exponential")


def units(size: int, per: int) -> int:
    return max(1, math.ceil(size / per))


# ---- simulated time, latency and partition ceilings ----------------------------------------


@dataclass
class Sim:
    ddb_s: float
    sqs_s: float
    vcpus: float
    t: float = 0.0  # the clock of the lane at work (epoch seconds)
    requests: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)  # requests that waited for a ceiling
    used: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    late: list[float] = field(default_factory=list)  # per send: seconds after its fire instant (≥ 0)
    sent: int = 0
    cpu: float = 0.0  # CPU seconds the tick's code used (this machine)
    _cpu_mark: float = 0.0

    def compute(self) -> None:
        """Charge the CPU used since the last request at the Lambda's vCPU share."""
        now = time.thread_time()
        spent, self._cpu_mark = now - self._cpu_mark, now
        self.cpu += spent
        self.t += spent / self.vcpus

    def request(self, op: str, key: str | None = None, cu: float = 0, kind: str = "") -> None:
        self.compute()
        self.requests[op] += 1
        if key is not None:
            ceiling = WCU_PER_KEY if kind == "wcu" else RCU_PER_KEY
            second = int(self.t)
            while self.used[(key, second)] + cu > ceiling:
                second += 1
            if second > int(self.t):
                self.throttled[kind] += 1
                self.t = float(second)
            self.used[(key, second)] += cu
        self.t += self.sqs_s if op == "sqs.SendMessageBatch" else self.ddb_s
        self._cpu_mark = time.thread_time()  # the model's own bookkeeping is not the tick's


class ChargedDue:
    def __init__(self, inner: Any, sim: Sim) -> None:
        self.inner, self.sim = inner, sim

    def add(self, entry: DueEntry) -> bool:
        self.sim.request("dynamodb.PutItem", f"due#{entry.shard}", units(DUE_ITEM, 1024), "wcu")
        return bool(self.inner.add(entry))

    def read(self, shard: str, until: int, after: str | None = None) -> Iterator[DueEntry]:
        per_page = QUERY_PAGE // DUE_ITEM
        n = 0
        for entry in self.inner.read(shard, until, after):
            if n % per_page == 0:  # a consistent Query page: 1 RCU per 4 KB read
                self.sim.request("dynamodb.Query", f"due#{shard}", units(per_page * DUE_ITEM, 4096), "rcu")
            n += 1
            yield entry
        if n == 0:
            self.sim.request("dynamodb.Query", f"due#{shard}", 1, "rcu")


class ChargedLeases:
    def __init__(self, inner: Any, sim: Sim) -> None:
        self.inner, self.sim = inner, sim

    def acquire_shard(self, shard: str, holder: str, now: int, seconds: int) -> Acquired | HeldElsewhere:
        self.sim.request("dynamodb.PutItem", f"keys#tick#shard#{shard}", 1, "wcu")
        got: Acquired | HeldElsewhere = self.inner.acquire_shard(shard, holder, now, seconds)
        return got

    def release_shard(self, shard: str, holder: str) -> None:
        self.sim.request("dynamodb.DeleteItem", f"keys#tick#shard#{shard}", 1, "wcu")
        self.inner.release_shard(shard, holder)

    def watermark(self, shard: str) -> str | None:
        self.sim.request("dynamodb.GetItem", f"keys#tick#through#{shard}", 1, "rcu")
        mark: str | None = self.inner.watermark(shard)
        return mark

    def advance_watermark(self, shard: str, through: str) -> bool:
        self.sim.request("dynamodb.PutItem", f"keys#tick#through#{shard}", units(KEY_ITEM, 1024), "wcu")
        return bool(self.inner.advance_watermark(shard, through))


class ChargedDueTasks:
    def __init__(self, inner: Any, sim: Sim) -> None:
        self.inner, self.sim = inner, sim

    def due_tasks(self, shard: str, until: int) -> Iterator[DueFire]:
        # The GSI query (eventually consistent: half a unit per 4 KB), one page at this scale.
        self.sim.request("dynamodb.Query", f"tasks.due#{shard}", 1, "rcu")
        yield from self.inner.due_tasks(shard, until)

    def _update(self, task_id: str) -> None:
        self.sim.request("dynamodb.UpdateItem", f"tasks#{task_id}", units(TASK_ITEM, 1024), "wcu")

    def advance_due(self, task_id: str, due_at: int, schedule_version: int, *, complete: bool = False) -> bool:
        self._update(task_id)
        return bool(self.inner.advance_due(task_id, due_at, schedule_version, complete=complete))

    def pause_with_error(self, task_id: str, schedule_version: int, error: str) -> bool:
        self._update(task_id)
        return bool(self.inner.pause_with_error(task_id, schedule_version, error))

    def complete(self, task_id: str, schedule_version: int) -> bool:
        self._update(task_id)
        return bool(self.inner.complete(task_id, schedule_version))


class ChargedTasks:
    """The tick reads whole tasks with BatchGetItem (≤ 100 keys, eventually consistent); the
    other verbs are the API's and pass through."""

    def __init__(self, inner: Any, sim: Sim) -> None:
        self.inner, self.sim = inner, sim

    def get_many(self, task_ids: Any) -> dict[str, Task]:
        ids = list(task_ids)
        for _ in range(0, max(1, len(ids)), 100):  # each task its own partition key: no hot key
            self.sim.request("dynamodb.BatchGetItem")
        got: dict[str, Task] = self.inner.get_many(ids)
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ChargedQueues:
    """SQS standard queues have no throughput ceiling to speak of: a send costs its latency.
    Records how late each message leaves against its fire instant."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def send_batch(self, band: str, sends: Sequence[Send]) -> set[str]:
        assert len(sends) <= queue.BATCH
        self.sim.request("sqs.SendMessageBatch")
        for s in sends:
            self.sim.late.append(max(0.0, self.sim.t - s.message.scheduled_for))
        self.sim.sent += len(sends)
        return {s.message.run_id for s in sends}


# ---- one deployment, one load ---------------------------------------------------------------


def background(stored: int, candidates: int) -> list[Task]:
    """The stored tasks that are not due this minute: daily schedules (their entries lie hours ahead)."""
    return [
        Task(f"d{i:09d}", "agent-1", CREATED, CREATED, TaskStatus.ACTIVE, DAILY, DEFINITION)
        for i in range(stored - candidates)
    ]


def every_minute(n: int) -> list[tuple[Task, int]]:
    """n tasks firing every minute, each with its pending fire after the last tick's horizon."""
    out = []
    last_horizon = NOW + timedelta(seconds=config.settings().lookahead_seconds - 60)
    for i in range(n):
        t = Task(f"m{i:09d}", "agent-1", CREATED, CREATED, TaskStatus.ACTIVE, EVERY_MINUTE, DEFINITION)
        fire = planning.next_fire(planning.build_schedule(t.schedule, t.task_id, NOW), last_horizon)
        assert fire is not None
        out.append((t, epoch(fire)))
    return out


@dataclass
class Outcome:
    fires_per_minute: int
    shards: int
    lanes: int
    ok: bool
    breaks: list[str]
    tick_seconds: float  # the longest simulated tick
    lag_p99_s: float
    cpu_s_per_tick: float
    throttled: dict[str, int]
    requests_per_fire: float


def simulate(
    shards: int, fires: int, lanes: int, args: argparse.Namespace, daily: list[Task], minute: list[tuple[Task, int]]
) -> Outcome:
    os.environ["TASKAPI_DUE_SHARDS"] = str(shards)
    config.settings.cache_clear()
    sim = Sim(args.ddb_ms / 1000, args.sqs_ms / 1000, args.lambda_mb / VCPU_MB)
    base = store.in_memory()
    put, add_all = base.tasks.put, base.due.add_all  # type: ignore[attr-defined]
    daily_fire = epoch(NOW.replace(hour=3) + timedelta(days=1))
    for t in daily:
        put(t)
    add_all(DueEntry(planning.shard_for(t.task_id), t.task_id, daily_fire, 1) for t in daily)
    for t, _ in minute[:fires]:
        put(t)
    add_all(DueEntry(planning.shard_for(t.task_id), t.task_id, fire, 1) for t, fire in minute[:fires])
    shard_ids = [str(s) for s in range(shards)]
    last_horizon = slot_of(epoch(NOW) + config.settings().lookahead_seconds - 60, "~")
    for s in shard_ids:
        base.shards.advance_watermark(s, last_horizon)  # the previous tick's
    charged = dataclasses.replace(
        base,
        tasks=ChargedTasks(base.tasks, sim),
        due=ChargedDue(base.due, sim),
        shards=ChargedLeases(base.shards, sim),
        due_tasks=ChargedDueTasks(base.due_tasks, sim),
    )
    store.use(charged)
    queue.use(ChargedQueues(sim))
    wiring.set_clock(lambda: sim.t)
    breaks: set[str] = set()
    longest = cpu_worst = 0.0
    try:
        for n in range(args.ticks):
            now = NOW + timedelta(minutes=n)
            horizon = tick.horizon_of(now)
            holder = uuid.uuid4().hex
            lane_end = [0.0] * lanes
            sent_before, cpu_before = sim.sent, sim.cpu
            dispatched = 0
            for shard in shard_ids:  # the pool hands each shard to the first free lane
                lane = min(range(lanes), key=lane_end.__getitem__)
                sim.t = now.timestamp() + lane_end[lane]
                sim._cpu_mark = time.thread_time()
                report = tick.tick_shard(shard, holder, now, horizon, clock=lambda: sim.t)
                sim.compute()
                lane_end[lane] = sim.t - now.timestamp()
                dispatched += report.dispatched
                if report.shards_busy or base.shards.watermark(shard) != slot_of(epoch(horizon), "~"):
                    breaks.add("shard budget (45 s)")
            longest = max(longest, max(lane_end))
            cpu_worst = max(cpu_worst, sim.cpu - cpu_before)
            if max(lane_end) > LAMBDA_TIMEOUT:
                breaks.add("Lambda timeout (55 s)")
            if (sim.cpu - cpu_before) / sim.vcpus > LAMBDA_TIMEOUT:
                breaks.add("tick CPU")
            if not breaks and (dispatched != fires or sim.sent - sent_before != fires):
                raise SystemExit(
                    f"scale model: tick {n} sent {dispatched} of the {fires} fires due: the model is broken"
                )
    finally:
        store.use(None)
        queue.use(None)
        wiring.reset()
    late = sorted(sim.late)
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))] if late else 0.0
    if p99 > LAG_GOAL:
        breaks.add("dispatch lag (p99 > 1 s)")
    if sim.throttled and breaks:
        breaks.update(f"partition {k.upper()} ceiling" for k in sim.throttled)
    return Outcome(
        fires,
        shards,
        lanes,
        not breaks,
        sorted(breaks),
        round(longest, 2),
        round(p99, 3),
        round(cpu_worst, 2),
        dict(sim.throttled),
        round(sum(sim.requests.values()) / max(1, sim.sent), 3),
    )


def report(o: Outcome) -> None:
    print(
        f"  shards {o.shards:3d} lanes {o.lanes:3d} fires/min {o.fires_per_minute:7,d}: "
        f"{'ok' if o.ok else 'BREAKS: ' + ', '.join(o.breaks)}; tick {o.tick_seconds} s, "
        f"lag p99 {o.lag_p99_s} s, cpu {o.cpu_s_per_tick} s, throttled {o.throttled}",
        flush=True,
    )


def ceiling(
    shards: int, lanes: int, top: int, steps: int, args: argparse.Namespace, daily: list[Task], minute: list[Any]
) -> tuple[Outcome | None, Outcome | None]:
    """The highest load `shards` sustain, by bisection in (0, top]: the best sustained outcome
    and the lowest one that broke (None: none broke)."""
    ok: Outcome | None = None
    bad: Outcome | None = None
    lo, hi = 0, top
    fires = top
    for _ in range(steps + 1):
        o = simulate(shards, fires, lanes, args, daily, minute)
        report(o)
        if o.ok:
            ok, lo = o, fires
            if fires == top:
                break
        else:
            bad, hi = o, fires
        fires = (lo + hi) // 2 // 1000 * 1000
        if fires <= lo or fires >= hi:
            break
    return ok, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stored", type=int, default=1_000_000)
    ap.add_argument("--top", type=int, default=200_000, help="the highest load tried (fires a minute)")
    ap.add_argument("--shards", default="8,16,24,32")
    ap.add_argument("--ticks", type=int, default=1, help="steady ticks per load (the last tick's state is seeded)")
    ap.add_argument("--steps", type=int, default=4, help="bisection steps per shard count")
    ap.add_argument("--ddb-ms", type=float, default=5.0)
    ap.add_argument("--sqs-ms", type=float, default=10.0)
    ap.add_argument("--lambda-mb", type=int, default=512, help="the tick's memory as deployed")
    ap.add_argument("--quick", action="store_true", help="a small run: 100,000 stored, loads up to 40,000")
    args = ap.parse_args()
    if args.quick:
        args.stored, args.top, args.shards, args.steps = 100_000, 40_000, "8,16", 1
    top = args.top
    shard_counts = sorted(int(x) for x in args.shards.split(","))
    candidates = top
    assert args.stored >= candidates, "the due tasks are among the stored ones"

    started = time.monotonic()
    print(f"seeding {args.stored:,} stored tasks ({candidates:,} of them every minute) ...", flush=True)
    daily = background(args.stored, candidates)
    minute = every_minute(candidates)  # the fires' instants do not depend on the shard count

    print(f"as deployed: {tick.MAX_PARALLEL_SHARDS} lanes, {args.lambda_mb} MB; bisecting each shard count", flush=True)
    best: Outcome | None = None
    broke: Outcome | None = None
    for shards in shard_counts:
        ok, bad = ceiling(shards, min(tick.MAX_PARALLEL_SHARDS, shards), top, args.steps, args, daily, minute)
        if ok is not None and (best is None or ok.fires_per_minute > best.fires_per_minute):
            best, broke = ok, bad
    if best is None:
        raise SystemExit("scale model: no load was sustained at any shard count; nothing to report")

    print(f"what if: a lane per shard, {VCPU_MB} MB (a full vCPU): the fewest shards for {top:,}", flush=True)
    deployed_mb, args.lambda_mb = args.lambda_mb, VCPU_MB
    whatif: Outcome | None = None
    for shards in shard_counts:
        o = simulate(shards, top, shards, args, daily, minute)
        report(o)
        if o.ok:
            whatif = o
            break
    args.lambda_mb = deployed_mb

    figures: dict[str, Any] = {
        "scale_stored_tasks": args.stored,
        "scale_fires_per_minute_ceiling": best.fires_per_minute,
        "scale_due_shards_needed": best.shards,
        "scale_tick_lanes": best.lanes,
        "scale_tick_seconds_at_ceiling": best.tick_seconds,
        "scale_lag_p99_s_at_ceiling": best.lag_p99_s,
        "scale_requests_per_fire": best.requests_per_fire,
        "scale_breaks_first": ", ".join(broke.breaks) if broke else f"nothing up to {top:,} fires/min",
        "scale_breaks_at_fires_per_minute": broke.fires_per_minute if broke else None,
        "scale_vs_eventbridge": round(best.fires_per_minute / EVENTBRIDGE_PER_MINUTE, 2),
        "scale_model": (
            f"DynamoDB {args.ddb_ms} ms/request, SQS {args.sqs_ms} ms/batch, {WCU_PER_KEY} WCU/s and "
            f"{RCU_PER_KEY} RCU/s per partition key, CPU at {deployed_mb}/{VCPU_MB} vCPU, "
            f"{args.ticks} steady ticks per load"
        ),
        "scale_model_seconds": round(time.monotonic() - started, 1),
    }
    figures |= {
        "scale_whatif_lane_per_shard_1vcpu_fires_per_minute": top if whatif else None,
        "scale_whatif_lane_per_shard_1vcpu_shards": whatif.shards if whatif else None,
        "scale_whatif_lane_per_shard_1vcpu_tick_seconds": whatif.tick_seconds if whatif else None,
    }
    for k, v in figures.items():
        print(f"{k}: {v}")
    if not args.quick:
        write_results(figures)


if __name__ == "__main__":
    main()
