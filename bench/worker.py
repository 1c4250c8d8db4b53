"""Worker throughput, requests per run and cost per million runs, on a moto server.

- worker_runs_per_s: scheduled no-op runs (one `log` step) executed by the real worker handler fed
  by a poller loop (receive 10 → handler → delete the successes), one thread; next to
  raw_worker_runs_per_s, a raw-boto3 loop doing only the essential receive, writes and delete
  (GetItem task, conditional PutItem run, UpdateItem run, DeleteMessageBatch);
  worker_vs_raw_ratio (goal ≥ 0.6).
- requests_per_run: AWS requests of one scheduled run end to end (its share of the tick + the
  worker), by service.operation, counted with botocore event hooks, over a day of hourly fires
  (the steady state: fires from the due table, one counter write per finished run).
- cost_per_million_runs_usd at on-demand us-east-1 prices (see PRICES and the capacity model below).

Usage: python bench/worker.py [--tasks 40] [--hours 25]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import ROOT, Requests, app_clients, start_emulator, write_results
from tick import PREFIX, T0, seed  # the tick bench's seeding writes to its prefix's tables

PRICES = {
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
}
# Capacity model (items here are < 1 KB to write and < 4 KB to read): a write is 1 WCU, plus
# the task `due` index's own writes when an update sets `due_at` (a key change: delete + put in
# the index, 2) or removes it (1), plus the counters' trim of their recent run marks (one write
# every RECENT_MAX - RECENT_KEEP counted runs of a task; a day of hourly runs has none, so it is
# added at that steady-state rate); a consistent GetItem is 1 RCU, an eventually consistent one
# 0.5; BatchGetItem (eventually consistent) 0.5 an item; a Query 0.5 RCU (1 if consistent) per
# started 4 KB of the items it returns (measured per call).
WRITE_UNITS = {"dynamodb.PutItem": 1, "dynamodb.UpdateItem": 1, "dynamodb.DeleteItem": 1}


def get_rcu(calls: Requests) -> float:
    """Per GetItem: 1 RCU if consistent, 0.5 if not (items < 4 KB)."""
    return sum(1.0 if p.get("ConsistentRead") else 0.5 for p in calls.params.get("dynamodb.GetItem", []))


def index_writes(updates: list[dict]) -> int:
    """The `due` index writes caused by task updates that set or remove `due_at`."""
    n = 0
    for params in updates:
        expr, names = params.get("UpdateExpression", ""), params.get("ExpressionAttributeNames", {})
        text = expr
        for alias, name in names.items():
            text = text.replace(alias, name)
        if "due_at" in text:
            n += 1 if "REMOVE" in text and "SET due_at" not in text else 2
    return n


def batch_get_keys(batches: list[dict]) -> int:
    return sum(len(t.get("Keys", [])) for b in batches for t in b.get("RequestItems", {}).values())


def drain_with_handler(sqs, queue_url: str, queue_arn: str, handler, want: int) -> tuple[int, float]:
    from local import events as lambda_events

    done, busy = 0, 0.0
    idle = 0
    while done < want and idle < 50:
        msgs = (
            sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
            ).get("Messages")
            or []
        )
        if not msgs:
            idle += 1
            time.sleep(0.05)
            continue
        idle = 0
        event = lambda_events.sqs_event(msgs, queue_arn, "us-east-1")
        t = time.perf_counter()
        failed = lambda_events.failed_ids(handler(event, None), [m["MessageId"] for m in msgs]) or set()
        busy += time.perf_counter() - t
        ok = [m for m in msgs if m["MessageId"] not in failed]
        if ok:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(ok)],
            )
        done += len(ok)
    return done, busy


def raw_worker(ddb, sqs, queue_url: str, want: int) -> int:
    done = 0
    while done < want:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages") or []
        if not msgs:
            break
        for m in msgs:
            body = json.loads(m["Body"])
            key = {"task_id": {"S": body["task_id"]}}
            ddb.get_item(TableName=PREFIX + "tasks", Key=key, ConsistentRead=True)
            run_key = {"task_id": {"S": body["task_id"]}, "run_id": {"S": f"raw-{body['fire']}"}}
            ddb.put_item(
                TableName=PREFIX + "runs",
                Item={**run_key, "status": {"S": "running"}},
                ConditionExpression="attribute_not_exists(run_id)",
            )
            ddb.update_item(
                TableName=PREFIX + "runs",
                Key=run_key,
                UpdateExpression="SET #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": "succeeded"}},
            )
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )
        done += len(msgs)
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--hours", type=int, default=25, help="hourly fires per task; the first is not measured")
    args = ap.parse_args()
    runs = args.tasks * (args.hours - 1)
    moto = start_emulator(PREFIX)
    try:
        import boto3
        from tick import raw_tick

        import app
        from chalicelib import dispatch
        from chalicelib.platform import wiring
        from chalicelib.platform.config import settings

        ddb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        ddb.put_item(
            TableName=PREFIX + "agents",
            Item={
                "agent_id": {"S": "11111111-1111-4111-8111-111111111111"},
                "name": {"S": "bench"},
                "created_at": {"S": "2030-01-01T00:00:00Z"},
                "status": {"S": "active"},
                "token_hash": {"S": "x"},
                "signing_secret": {"S": "whsec_bench"},
                "task_count": {"N": "0"},
            },
        )
        # The steady state of hourly tasks created at T0: the first fire starts each schedule
        # (from the task's index) and is not measured; every later one comes from the due table.
        now = float(T0 + 3600)
        wiring.set_clock(lambda: now)  # fires are due at the clock: no DelaySeconds to wait out
        seed(ddb, 0, args.tasks, int(now), settings().due_shards, running=False)
        queue = wiring.queue_url("normal")
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert dispatch.run_tick(wiring.now_precise()).dispatched == args.tasks
        assert drain_with_handler(sqs, queue, arn, app.worker_normal, args.tasks)[0] == args.tasks
        tick_calls, worker_calls = Requests(app_clients()), Requests(app_clients())
        ours_s = busy = 0.0
        for hour in range(2, args.hours + 1):
            now = float(T0 + hour * 3600)
            with tick_calls:
                assert dispatch.run_tick(wiring.now_precise()).dispatched == args.tasks
            with worker_calls:
                t = time.perf_counter()
                done, spent = drain_with_handler(sqs, queue, arn, app.worker_normal, args.tasks)
                ours_s += time.perf_counter() - t
            busy += spent
            assert done == args.tasks, done

        # A tick with nothing due: its requests (leases, watermarks, one Query of each index per
        # shard) are a fixed cost per minute, not per run; they are taken out of the per-run
        # figures below and reported per month instead.
        now += 1800
        with Requests(app_clients()) as empty:
            assert dispatch.run_tick(wiring.now_precise()).dispatched == 0
        fire = int(now) + 3600  # away from the hourly entries our tick wrote
        raw_queue = sqs.create_queue(QueueName=PREFIX + "raw")["QueueUrl"]
        seed(ddb, 10_000_000, runs, fire, settings().due_shards)
        raw_tick(ddb, sqs, raw_queue, fire, fire + 60, settings().due_shards)
        t = time.perf_counter()
        raw_done = raw_worker(ddb, sqs, raw_queue, runs)
        raw_s = time.perf_counter() - t
        assert raw_done == runs, raw_done
    finally:
        moto.stop()

    ticks = args.hours - 1
    per_run: dict[str, float] = {}
    for calls in (tick_calls.calls, worker_calls.calls):
        for op, n in calls.items():
            per_run[op] = per_run.get(op, 0) + n / runs
    for op, n in empty.calls.items():  # the measured ticks' fixed part
        per_run[op] = max(0.0, per_run.get(op, 0) - ticks * n / runs)
    # the poller loop's own receive and delete calls are not on an app client: add them
    batches = (args.hours - 1) * -(-args.tasks // 10)
    per_run["sqs.ReceiveMessage"] = per_run.get("sqs.ReceiveMessage", 0) + batches / runs
    per_run["sqs.DeleteMessageBatch"] = per_run.get("sqs.DeleteMessageBatch", 0) + batches / runs
    per_run = {k: round(v, 3) for k, v in sorted(per_run.items()) if not k.endswith("GetQueueUrl")}
    updates = tick_calls.params.get("dynamodb.UpdateItem", []) + worker_calls.params.get("dynamodb.UpdateItem", [])
    gsi = index_writes(updates) / runs
    batch_gets = tick_calls.params.get("dynamodb.BatchGetItem", []) + worker_calls.params.get(
        "dynamodb.BatchGetItem", []
    )

    # Queries: 0.5 RCU per started 4 KB of the items each returned (eventually consistent).
    def q_rcu(calls: Requests) -> float:
        """Per Query: 0.5 RCU (1 if consistent) per started 4 KB of the items it returned."""
        queries = calls.params.get("dynamodb.Query", [])
        return sum(
            (1.0 if p.get("ConsistentRead") else 0.5) * max(1, -(-b // 4096))
            for p, b in zip(queries, calls.query_bytes, strict=True)
        )

    query_rcu = q_rcu(tick_calls) + q_rcu(worker_calls) - ticks * q_rcu(empty)
    fixed_wcu = sum(WRITE_UNITS.get(op, 0) * n for op, n in empty.calls.items())
    fixed_rcu = get_rcu(empty) + q_rcu(empty)
    ticks_a_month = 30 * 24 * 60
    fixed_month = ticks_a_month * (
        fixed_wcu * PRICES["dynamodb_write_unit"]
        + fixed_rcu * PRICES["dynamodb_read_unit"]
        + PRICES["lambda_request"]
        + sum(n for op, n in empty.calls.items() if op.startswith("sqs.")) * PRICES["sqs_request"]
    )
    from chalicelib.store.counters import RECENT_KEEP, RECENT_MAX

    trims = sum(1 for p in updates if p.get("TableName", "").endswith("stats") and "REMOVE" in p["UpdateExpression"])
    trim_wcu = max(0.0, 1 / (RECENT_MAX - RECENT_KEEP) - trims / runs)  # the steady state's share
    wcu = sum(WRITE_UNITS.get(op, 0) * n for op, n in per_run.items()) + gsi + trim_wcu
    rcu = (
        max(0.0, get_rcu(tick_calls) + get_rcu(worker_calls) - ticks * get_rcu(empty)) / runs
        + 0.5 * batch_get_keys(batch_gets) / runs
        + query_rcu / runs
    )
    sqs_requests = sum(n for op, n in per_run.items() if op.startswith("sqs."))
    handler_ms = busy * 1000 / runs  # wall time of the handler per run (records run concurrently)
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"]
    memory_gb = (
        config["lambda_functions"]["worker_normal"].get("lambda_memory_size", config.get("lambda_memory_size", 128))
        / 1024
    )
    lambda_requests = 1 / 10  # one worker invocation per batch of 10; ticks are in the fixed cost
    cost = {
        "dynamodb_writes": wcu * PRICES["dynamodb_write_unit"] * 1e6,
        "dynamodb_reads": rcu * PRICES["dynamodb_read_unit"] * 1e6,
        "sqs": sqs_requests * PRICES["sqs_request"] * 1e6,
        "lambda_requests": lambda_requests * PRICES["lambda_request"] * 1e6,
        "lambda_duration": handler_ms / 1000 * memory_gb * PRICES["lambda_gb_second"] * 1e6,
    }
    total = sum(cost.values())
    figures = {
        "worker_runs_per_s": round(runs / ours_s, 1),
        "raw_worker_runs_per_s": round(runs / raw_s, 1),
        "worker_vs_raw_ratio": round(raw_s / ours_s, 3),
        "requests_per_run": per_run,
        "write_units_per_run": round(wcu, 2),
        "index_write_units_per_run": round(gsi, 2),
        "read_units_per_run": round(rcu, 2),
        "worker_handler_ms_per_run_on_moto": round(handler_ms, 2),
        "cost_per_million_runs_usd": round(total, 2),
        "cost_per_million_runs_breakdown_usd": {k: round(v, 3) for k, v in cost.items()},
        # Lambda duration is the handler's wall time on moto, which follows the machine's load:
        # the rest is counted requests and does not.
        "cost_per_million_runs_without_lambda_duration_usd": round(total - cost["lambda_duration"], 3),
        "worker_bench_load_average_1m": round(os.getloadavg()[0], 1),
        "tick_fixed_requests_per_tick": empty.calls,
        "tick_fixed_cost_per_month_usd": round(fixed_month, 2),
    }
    print(f"worker: {runs / ours_s:.1f} runs/s, raw boto3 {runs / raw_s:.1f} runs/s, ratio {raw_s / ours_s:.2f}")
    print("requests per scheduled run:", json.dumps(per_run))
    print(
        f"capacity per run: {wcu:.2f} WCU, {rcu:.2f} RCU; handler {handler_ms:.1f} ms/run on moto "
        f"at {memory_gb * 1024:.0f} MB"
    )
    print(f"cost per million runs: ${total:.2f}  " + ", ".join(f"{k} ${v:.3f}" for k, v in cost.items()))
    print(
        f"fixed: a tick with nothing due makes {sum(empty.calls.values())} requests {empty.calls}: "
        f"${fixed_month:.2f} a month (DynamoDB + tick invocations, without the tick's Lambda duration)"
    )
    write_results(figures)


if __name__ == "__main__":
    main()
