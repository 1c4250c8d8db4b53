"""What encrypting signing secrets costs the worker's hot path, on a moto server.

Every run with an HTTP step needs its agent's signing secret. Before: one GetItem of the agent
per run (the plaintext was stored). Now: the stored ciphertext is read and decrypted (GetItem +
kms:Decrypt) once per agent and worker container every agents.SECRET_CACHE_SECONDS; the other
runs read it from memory.

- secrets_read_ms_plaintext_getitem: the old read (GetItem of a plaintext item), median ms;
- secrets_read_ms_cold: the new read on a miss (GetItem + kms:Decrypt), median ms;
- secrets_read_ms_cached: the new read on a hit, median ms;
- secrets_aws_requests_per_1000_http_runs_before / _after: AWS requests for the secret over 1,000
  runs of 10 agents in one container within a cache period (after: one GetItem and one Decrypt
  per agent).
- secrets_kms_usd_per_million_decrypts: the KMS price the misses pay ($0.03 per 10,000 requests).

Usage: python bench/signing_secrets.py [--agents 10] [--runs 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import Requests, start_emulator, write_results

PREFIX = "bench-secrets-"
KMS_USD_PER_REQUEST = 0.03 / 10_000


def median_ms(fn, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(samples), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    moto = start_emulator(PREFIX)
    try:
        from chalicelib.platform import wiring
        from chalicelib.services import agents
        from chalicelib.store.models import AgentModel

        made = [agents.create_agent(f"bench-{i}") for i in range(args.agents)]
        ids = [a["agent_id"] for a in made]
        assert agents.open_secret(ids[0], AgentModel.get(ids[0]).signing_secret) == made[0]["signing_secret"]

        def plaintext_read() -> None:
            AgentModel.get(ids[0]).signing_secret  # noqa: B018 - the old hot-path read

        def cold_read() -> None:
            agents.forget_secrets()
            agents.signing_secret(ids[0])

        figures = {
            "secrets_read_ms_plaintext_getitem": median_ms(plaintext_read, 200),
            "secrets_read_ms_cold": median_ms(cold_read, 200),
            "secrets_read_ms_cached": median_ms(lambda: agents.signing_secret(ids[0]), 2000),
        }
        clients = [wiring.client("kms"), AgentModel._get_connection().connection.client]
        with Requests(clients) as before:
            for i in range(args.runs):
                AgentModel.get(ids[i % len(ids)]).signing_secret  # noqa: B018 - the old read
        agents.forget_secrets()
        with Requests(clients) as after:
            for i in range(args.runs):
                agents.signing_secret(ids[i % len(ids)])
        figures.update(
            secrets_aws_requests_per_1000_http_runs_before=round(before.total * 1000 / args.runs),
            secrets_aws_requests_per_1000_http_runs_after=round(after.total * 1000 / args.runs),
            secrets_kms_usd_per_million_decrypts=round(KMS_USD_PER_REQUEST * 1e6, 2),
        )
        print(figures, before.calls, after.calls)
        write_results(figures)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
