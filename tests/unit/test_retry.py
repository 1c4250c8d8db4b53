"""Backoff timing as API.md defines it (base 10 s, cap 1 h)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.retry import backoff_seconds, bounds


@pytest.mark.parametrize(
    ("strategy", "attempt", "expected"),
    [
        ("fixed", 1, 10),
        ("fixed", 7, 10),
        ("linear", 1, 10),
        ("linear", 3, 30),
        ("linear", 400, 3600),
    ],
)
def test_deterministic_strategies(strategy, attempt, expected):
    assert backoff_seconds(strategy, attempt) == expected


def test_exponential_jitter_ceiling_doubles_then_caps():
    assert [bounds("exponential_jitter", a)[1] for a in range(1, 11)] == [
        10,
        20,
        40,
        80,
        160,
        320,
        640,
        1280,
        2560,
        3600,
    ]


@given(attempt=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_exponential_jitter_stays_in_bounds(attempt, seed):
    lo, hi = bounds("exponential_jitter", attempt)
    assert lo <= backoff_seconds("exponential_jitter", attempt, random.Random(seed)) <= hi


def test_exponential_jitter_spreads_out():
    rng = random.Random(7)
    values = {backoff_seconds("exponential_jitter", 6, rng) for _ in range(200)}
    assert len(values) > 50 and min(values) < 60 and max(values) > 260
