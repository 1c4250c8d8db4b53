"""Dispatch lag on the local stack: start lag (started − scheduled_for) of once and cron fires,
with the tick every 60 s as deployed. Fires within the look-ahead of their creation go out on
write; the others through the tick.

Writes dispatch_lag_p50_s, dispatch_lag_p99_s, dispatch_lag_max_s, dispatch_lag_fires.
Usage: python bench/lag.py [--once 200] [--cron 10] [--minutes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

from common import ROOT, write_results


def call(base: str, method: str, path: str, token: str, body: object = None) -> dict:
    req = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalStackProcess:
    """`python -m local` in a subprocess on free ports, ready when entered, stopped on exit."""

    def __init__(self, tick_seconds: int = 60) -> None:
        sys.path.insert(0, str(ROOT))
        from local.env import free_port

        self.port, self.moto_port, self.admin = free_port(), free_port(), "bench-admin-token"
        self.prefix = "tasksapi-bench-"
        self.base = f"http://127.0.0.1:{self.port}"
        self.moto_endpoint = f"http://127.0.0.1:{self.moto_port}"
        self.admin_headers = {"Authorization": f"Bearer {self.admin}"}
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "MOTO_PORT": str(self.moto_port),
            "TASKAPI_ADMIN_TOKEN": self.admin,
            "TASKAPI_TICK_SECONDS": str(tick_seconds),
            "TASKAPI_PREFIX": self.prefix,
            "TASKAPI_STATE": "memory",  # a bench never touches the developer's .data/
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }

    def __enter__(self) -> LocalStackProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(240):
            try:
                urllib.request.urlopen(self.base + "/health", timeout=1)
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the local stack did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--once", type=int, default=200)
    ap.add_argument("--cron", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=3)
    args = ap.parse_args()
    with LocalStackProcess(tick_seconds=60) as stack:
        base, admin = stack.base, stack.admin
        agent = call(base, "POST", "/agents", admin, {"name": "lag-bench"})
        tok, aid = agent["token"], agent["agent_id"]
        payload = {"steps": [{"id": "noop", "type": "log", "message": "tick"}]}
        start = time.time()
        end = start + args.minutes * 60
        rng = random.Random(1)
        tasks = []
        for i in range(args.once):
            at = start + 20 + rng.random() * (end - start - 40)
            tasks.append(
                call(
                    base,
                    "POST",
                    "/tasks",
                    tok,
                    {
                        "title": f"once {i}",
                        "description": "",
                        "schedule_kind": "once",
                        "schedule_expr": iso(at),
                        "payload": payload,
                        "created_by": aid,
                    },
                )["id"]
            )
        cron = [
            call(
                base,
                "POST",
                "/tasks",
                tok,
                {
                    "title": f"cron {i}",
                    "description": "",
                    "schedule_kind": "cron",
                    "schedule_expr": "* * * * *",
                    "payload": payload,
                    "created_by": aid,
                    "ends_at": iso(end),
                },
            )["id"]
            for i in range(args.cron)
        ]
        created = time.time()
        time.sleep(max(0.0, end - time.time()) + 15)
        lags = []
        for tid in tasks + cron:
            runs = call(base, "GET", f"/tasks/{tid}/runs?limit=200", tok)["runs"]
            lags += [r["start_lag_ms"] / 1000 for r in runs if r.get("start_lag_ms") is not None]
    lags.sort()
    q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]  # noqa: E731
    figures = {
        "dispatch_lag_p50_s": round(q(0.5), 3),
        "dispatch_lag_p99_s": round(q(0.99), 3),
        "dispatch_lag_max_s": round(lags[-1], 3),
        "dispatch_lag_fires": len(lags),
        "dispatch_lag_tick_seconds": 60,
    }
    print(
        f"start lag over {len(lags)} fires ({args.once} once + {args.cron} cron tasks, tick 60 s; "
        f"creating took {created - start:.0f} s): p50 {q(0.5):.3f} s, p99 {q(0.99):.3f} s, max {lags[-1]:.3f} s"
    )
    write_results(figures)


if __name__ == "__main__":
    main()
