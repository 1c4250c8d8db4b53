"""The local tick loop's schedule: half a period off the wall-clock multiples."""

from __future__ import annotations

from local.ticker import next_boundary


def test_ticks_fall_half_a_period_past_the_minute():
    assert next_boundary(1_800_000_000.0, 60) == 1_800_000_030.0  # 1_800_000_000 is a whole minute
    assert next_boundary(1_800_000_030.0, 60) == 1_800_000_090.0  # strictly after
    assert next_boundary(1_800_000_045.5, 60) == 1_800_000_090.0
    assert next_boundary(10.2, 2) == 11.0
