"""The scale model (bench/scale.py) at a tiny size: it runs the tick's own code, charges the
requests it makes, sends every fire due, and says so when a load breaks the tick's budget."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from chalicelib.platform import config

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture()
def scale(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench scripts import `common` as a sibling
    monkeypatch.setenv("TASKAPI_DUE_SHARDS", "8")  # the model sets it per shard count
    module = importlib.import_module("scale")
    yield module
    sys.modules.pop("scale", None)
    monkeypatch.undo()
    config.settings.cache_clear()


def args(ddb_ms: float) -> argparse.Namespace:
    return argparse.Namespace(ddb_ms=ddb_ms, sqs_ms=10.0, lambda_mb=512, ticks=2)


def test_a_light_load_is_sustained_and_every_fire_is_sent(scale: ModuleType) -> None:
    daily, minute = scale.background(3_000, 400), scale.every_minute(400)
    o = scale.simulate(4, 400, 4, args(5.0), daily, minute)
    assert o.ok and o.breaks == []
    # a fire takes about one request: the next entry's write, plus its share of a send batch,
    # a batch read of tasks and the shard's lease, watermark and queries
    assert 1.0 < o.requests_per_fire < 1.5
    assert 0 < o.tick_seconds < 45 and o.lag_p99_s == 0.0


def test_slow_requests_break_the_shard_budget(scale: ModuleType) -> None:
    daily, minute = scale.background(3_000, 2_000), scale.every_minute(2_000)
    # 2,000 fires on 2 shards at 100 ms a write: 100 s of writes per shard, past its 45 s
    o = scale.simulate(2, 2_000, 2, args(100.0), daily, minute)
    assert not o.ok
    assert "shard budget (45 s)" in o.breaks
