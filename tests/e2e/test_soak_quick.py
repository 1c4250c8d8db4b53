"""The soak bench in its quick mode (`bench/soak.py --quick`, about a minute once the stack is up)
against a real local stack with faults on: its accounting sees fires, runs and target calls, and
its counters add up. Not that the figures are zero: that is the bench's job, not this test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import FINAL, parse, run
from tests.secrets_seen import CHECKER

pytestmark = pytest.mark.e2e


def test_the_quick_soak_accounts_for_every_fire_run_and_call(tmp_path: Path) -> None:
    log = tmp_path / "soak-stack.log"
    figures = run(parse(["--quick", "--log", str(log)]))
    # Its stack's output (faults make it take the failure paths) goes to the secrets-in-logs check
    # too: by shape only, as the bench's agents are made inside it.
    lines = log.read_text().splitlines()
    assert len(lines) > 3, "the soak stack printed nothing"
    for line in lines:
        CHECKER.line("stack:soak", line)
    acc = figures["_accounting"]
    expected, records, calls = figures["soak_fires_expected"], figures["soak_run_records"], figures["soak_target_calls"]
    # The setup worked: it expected fires, found runs, and the target was called.
    assert expected > 0 and records > 0 and calls > 0, figures
    assert figures["soak_stack_exit_code"] == 0

    # Every expected fire has a record or is counted lost.
    answered = sum(1 for found in acc["matched"].values() if found)
    assert answered + figures["soak_lost"] == expected
    # Every record has a status; the stuck ones are exactly the non-final ones.
    assert sum(figures["soak_run_statuses"].values()) == records
    assert figures["soak_stuck_runs"] == sum(n for s, n in figures["soak_run_statuses"].items() if s not in FINAL)
    # Every record has a count of executions at the target; every target call belongs to a record
    # or is counted as having none.
    assert sum(figures["soak_executions_per_fire"].values()) == records
    per_record = sum(int(n) * count for n, count in figures["soak_executions_per_fire"].items())
    assert per_record + figures["soak_target_calls_without_run_record"] == calls
    assert sum(figures["soak_target_calls_by_outcome"].values()) == calls
    # The stack's fault hooks saw the application's calls, and each target call came from one of
    # the pipeline attempts the crash hook counted.
    injected = figures["soak_faults_injected"]
    assert injected["ddb_attempts"] > 0 and injected["sqs_attempts"] > 0
    assert calls <= injected["pipeline_attempts"]
    assert figures["soak_lag_p99_s"] is not None and figures["soak_rss_start_mb"] and figures["soak_rss_end_mb"]
    # Each extra successful execution is classified once: a double (by kind) or a redelivery (by cause).
    assert figures["soak_double_executions"] == sum(figures["soak_double_executions_by_kind"].values())
    assert figures["soak_redeliveries"] == sum(figures["soak_redeliveries_by_cause"].values())
    delivered = [c for c in acc["calls_by_key"].values() if any(x.delivered for x in c)]
    extra = sum(sum(x.delivered for x in c) - 1 for c in delivered)
    assert figures["soak_redeliveries"] + figures["soak_double_executions"] >= extra
    assert 0 < figures["soak_lag_fires_unfaulted"] <= figures["soak_lag_fires"]
