"""API latency on the local stack next to a raw DynamoDB round trip on the same moto server.

An authenticated GET /tasks/{id} reads the caller's agent, the task and the task's counters (three
consistent GetItems); the baseline makes the same three raw reads on the same items. Writes api_get_task_ms_p50, api_get_task_ms_p99, raw_reads_ms_p50
and api_vs_raw_ratio (p50 over p50).
Usage: python bench/api.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import requests
from common import write_results
from lag import LocalStackProcess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with LocalStackProcess(tick_seconds=60) as stack:
        session = requests.Session()
        agent = session.post(f"{stack.base}/agents", json={"name": "api-bench"}, headers=stack.admin_headers).json()
        auth = {"Authorization": f"Bearer {agent['token']}"}
        task = session.post(
            f"{stack.base}/tasks",
            headers=auth,
            json={
                "title": "api bench",
                "description": "",
                "schedule_kind": "event",
                "created_by": agent["agent_id"],
                "payload": {"steps": [{"id": "a", "type": "log", "message": "x"}]},
            },
        ).json()
        api_ms = []
        for _ in range(args.requests):
            t = time.perf_counter()
            r = session.get(f"{stack.base}/tasks/{task['id']}", headers=auth)
            api_ms.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        import boto3

        ddb = boto3.client(
            "dynamodb",
            endpoint_url=stack.moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        raw_ms = []
        for _ in range(args.requests):
            t = time.perf_counter()
            ddb.get_item(
                TableName=stack.prefix + "agents", Key={"agent_id": {"S": agent["agent_id"]}}, ConsistentRead=True
            )
            ddb.get_item(TableName=stack.prefix + "tasks", Key={"task_id": {"S": task["id"]}}, ConsistentRead=True)
            ddb.get_item(TableName=stack.prefix + "stats", Key={"task_id": {"S": task["id"]}}, ConsistentRead=True)
            raw_ms.append((time.perf_counter() - t) * 1000)
    api_ms.sort()
    p50, p99 = statistics.median(api_ms), api_ms[int(0.99 * len(api_ms)) - 1]
    raw50 = statistics.median(raw_ms)
    print(
        f"GET /tasks/{{id}}: p50 {p50:.1f} ms, p99 {p99:.1f} ms; the same reads, raw, on the same moto server: "
        f"p50 {raw50:.1f} ms; ratio {p50 / raw50:.2f} ({args.requests} sequential requests, one connection)"
    )
    write_results(
        {
            "api_get_task_ms_p50": round(p50, 2),
            "api_get_task_ms_p99": round(p99, 2),
            "raw_reads_ms_p50": round(raw50, 2),
            "api_vs_raw_ratio": round(p50 / raw50, 3),
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)


if __name__ == "__main__":
    main()
