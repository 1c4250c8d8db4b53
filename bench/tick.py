"""Tick cost and speed on a moto server, for running schedules (the steady state: each
task's next fire is an entry in the due table).

- tick_requests_1k_of_1k / tick_requests_1k_of_<N>: AWS requests of one tick with 1,000 due tasks
  among 1,000 and among N stored (the rest due later: entries outside the window);
  tick_requests_ratio_100k_vs_1k is their ratio (goal ≤ 1.1).
- tick_seconds_per_1k_due next to raw_tick_seconds_per_1k_due: a minimal raw-boto3 tick doing
  only the essential reads, writes and sends (Query per shard, BatchGetItem of the tasks,
  SendMessageBatch per 10, PutItem of each next entry) on the same server and data;
  tick_vs_raw_ratio (goal ≤ 1.5).

Usage: python bench/tick.py [--stored 100000] [--due 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from common import Requests, app_clients, start_emulator, store_hourly_tasks, write_results

PREFIX = "benchtick-"
AGENT = "11111111-1111-4111-8111-111111111111"
T0 = 1_900_000_000 - 1_900_000_000 % 3600  # an hour boundary, far from the wall clock


def seed(dynamodb, start: int, n: int, due_at: int, shards: int, *, running: bool = True) -> None:
    """n hourly tasks created at T0: running (their next fire `due_at` is a due-table entry), or
    starting (`due_at` in the task's own index, as after a create)."""
    created = datetime.fromtimestamp(T0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    store_hourly_tasks(dynamodb, PREFIX, AGENT, created, start, n, due_at, running=running)


def raw_tick(dynamodb, sqs, queue_url: str, now: int, horizon: int, shards: int) -> int:
    """The essential work of a tick and nothing else: read the due entries, read their
    tasks (status and schedule version), send, write each next entry."""
    sent = 0
    for shard in range(shards):
        kwargs = {
            "TableName": PREFIX + "due",
            "KeyConditionExpression": "shard = :s AND slot BETWEEN :w AND :h",
            "ExpressionAttributeValues": {
                ":s": {"S": str(shard)},
                ":w": {"S": f"{now - 60:010d}"},  # the watermark a minute-apart tick left
                ":h": {"S": f"{horizon:010d}#~"},
            },
        }
        items: list = []
        while True:
            page = dynamodb.query(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for i in range(0, len(items), 10):
            chunk = items[i : i + 10]
            dynamodb.batch_get_item(
                RequestItems={PREFIX + "tasks": {"Keys": [{"task_id": it["task_id"]} for it in chunk]}}
            )
            sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {
                        "Id": str(n),
                        "MessageBody": json.dumps({"task_id": it["task_id"]["S"], "fire": it["fire"]["N"]}),
                        "DelaySeconds": max(0, int(it["fire"]["N"]) - now),
                    }
                    for n, it in enumerate(chunk)
                ],
            )
            for it in chunk:
                nxt = int(it["fire"]["N"]) + 3600
                dynamodb.put_item(
                    TableName=PREFIX + "due",
                    Item={
                        "shard": it["shard"],
                        "slot": {"S": f"{nxt:010d}#{it['task_id']['S']}"},
                        "task_id": it["task_id"],
                        "fire": {"N": str(nxt)},
                        "schedule_version": it["schedule_version"],
                    },
                )
            sent += len(chunk)
    return sent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--due", type=int, default=1000)
    args = ap.parse_args()
    moto = start_emulator(PREFIX)
    try:
        import boto3

        from chalicelib import dispatch
        from chalicelib.platform import wiring
        from chalicelib.platform.config import settings

        ddb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        raw_queue = sqs.create_queue(QueueName=PREFIX + "raw")["QueueUrl"]
        shards = settings().due_shards
        now = T0 + 3600 - 30  # 30 s before the fires
        wiring.set_clock(lambda: float(now))

        # 1,000 due among 1,000: our tick, counted and timed
        seed(ddb, 0, args.due, T0 + 3600, shards)
        with Requests(app_clients()) as small:
            t = time.perf_counter()
            report = dispatch.run_tick(wiring.now_precise())
            ours_s = time.perf_counter() - t
        assert report.dispatched == args.due, report
        depth_ours = int(
            sqs.get_queue_attributes(
                QueueUrl=wiring.queue_url("normal"), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
            )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
        )

        # the raw baseline on the same 1,000 items, due again, into an empty queue
        seed(ddb, 0, args.due, T0 + 3600, shards)
        t = time.perf_counter()
        raw_sent = raw_tick(ddb, sqs, raw_queue, now, now + settings().lookahead_seconds, shards)
        raw_s = time.perf_counter() - t
        assert raw_sent == args.due

        # 1,000 due among N stored, an hour later: the same tasks (our tick wrote their next
        # entries) plus N−1,000 whose next fires lie an hour further
        t = time.perf_counter()
        seed(ddb, 10_000_000, args.stored - args.due, T0 + 3 * 3600, shards)
        seed_s = time.perf_counter() - t
        now += 3600
        sqs.purge_queue(QueueUrl=wiring.queue_url("normal"))
        # A tick stops a shard 45 s in (its lease is 55 s); on moto, whose Query of a large
        # partition is slow, the rest then goes out with the next tick: count every tick needed.
        sent, big_ticks = 0, 0
        with Requests(app_clients()) as big:
            t = time.perf_counter()
            while sent < args.due and big_ticks < 3:
                sent += dispatch.run_tick(wiring.now_precise()).dispatched
                big_ticks += 1
            big_s = time.perf_counter() - t
        assert sent == args.due, sent
    finally:
        moto.stop()

    ratio = big.total / small.total
    figures = {
        "tick_requests_1k_of_1k": small.total,
        f"tick_requests_1k_of_{args.stored // 1000}k": big.total,
        "tick_requests_ratio_100k_vs_1k": round(ratio, 3),
        f"tick_count_1k_of_{args.stored // 1000}k_on_moto": big_ticks,
        "tick_requests_by_operation_1k_of_1k": small.calls,
        "tick_seconds_per_1k_due": round(ours_s * 1000 / args.due, 3),
        "raw_tick_seconds_per_1k_due": round(raw_s * 1000 / args.due, 3),
        "tick_vs_raw_ratio": round(ours_s / raw_s, 3),
        "tick_bench_queue_depth_before": 0,
        "tick_bench_queue_depth_after": depth_ours,
    }
    print(f"tick, {args.due} due among {args.due}: {small.total} requests {small.calls}")
    print(
        f"tick, {args.due} due among {args.stored}: {big.total} requests {big.calls}  "
        f"(ratio {ratio:.3f}; {big_ticks} tick(s) in {big_s:.1f} s "
        f"and seeding {seed_s:.0f} s — time on moto, not on DynamoDB)"
    )
    print(
        f"tick seconds per 1k due: ours {ours_s * 1000 / args.due:.2f} s, raw boto3 {raw_s * 1000 / args.due:.2f} s, "
        f"ratio {ours_s / raw_s:.2f} (queue depth 0 → {depth_ours})"
    )
    write_results(figures)


if __name__ == "__main__":
    main()
