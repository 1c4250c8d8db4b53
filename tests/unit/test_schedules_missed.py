"""plan_missed: what the tick runs and records as skipped after fires were missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.schedules import MissedPlan, ScheduleError, parse_schedule, plan_missed

NOW = datetime(2027, 1, 1, tzinfo=UTC)
HOURLY = parse_schedule("cron", "0 * * * *", now=NOW)
EVERY_MINUTE = parse_schedule("cron", "* * * * *", now=NOW)
POLICIES = ["run_once", "skip", "run_all"]


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def hours(*values: int) -> tuple[datetime, ...]:
    return tuple(z("2027-01-01T00:00:00Z") + timedelta(hours=h) for h in values)


def minutes(start: str, count: int) -> tuple[datetime, ...]:
    return tuple(z(start) + timedelta(minutes=m) for m in range(count))


@pytest.mark.parametrize("policy", POLICIES)
def test_nothing_due_yet(policy: str) -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T10:00:00Z"), z("2027-01-01T09:59:59Z"), policy)
    assert plan == MissedPlan(run=(), skipped=(), next_after=z("2027-01-01T10:00:00Z"))


@pytest.mark.parametrize("policy", POLICIES)
def test_one_late_fire_is_delayed_not_missed(policy: str) -> None:
    """Only the 10:00 fire is due at 10:40 (11:00 is not): it runs whatever the policy."""
    plan = plan_missed(HOURLY, z("2027-01-01T10:00:00Z"), z("2027-01-01T10:40:00Z"), policy)
    assert plan == MissedPlan(run=hours(10), skipped=(), next_after=z("2027-01-01T11:00:00Z"))


@pytest.mark.parametrize("policy", POLICIES)
def test_a_fire_due_exactly_now_runs(policy: str) -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T10:00:00Z"), z("2027-01-01T10:00:00Z"), policy)
    assert plan.run == hours(10) and plan.skipped == () and plan.next_after == z("2027-01-01T11:00:00Z")


def test_run_once_runs_the_most_recent_and_skips_the_rest() -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:30:00Z"), "run_once")
    assert plan == MissedPlan(run=hours(10), skipped=hours(6, 7, 8, 9), next_after=z("2027-01-01T11:00:00Z"))


def test_skip_skips_every_overdue_fire() -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:30:00Z"), "skip")
    assert plan == MissedPlan(run=(), skipped=hours(6, 7, 8, 9, 10), next_after=z("2027-01-01T11:00:00Z"))


def test_skip_still_runs_a_fire_within_grace() -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:00:45Z"), "skip")
    assert plan.run == hours(10) and plan.skipped == hours(6, 7, 8, 9)
    wider = plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:30:00Z"), "skip", grace_seconds=3600)
    assert wider.run == hours(10) and wider.skipped == hours(6, 7, 8, 9)


@pytest.mark.parametrize("policy", POLICIES)
def test_on_time_fires_run_under_every_policy(policy: str) -> None:
    """At 10:01:00 with 60 s grace, 10:00 and 10:01 are both on time, 09:58 and 09:59 are missed."""
    plan = plan_missed(EVERY_MINUTE, z("2027-01-01T09:58:00Z"), z("2027-01-01T10:01:00Z"), policy)
    on_time = minutes("2027-01-01T10:00:00Z", 2)
    missed = minutes("2027-01-01T09:58:00Z", 2)
    if policy == "run_all":
        assert plan.run == missed + on_time and plan.skipped == ()
    else:
        assert plan.run == on_time and plan.skipped == missed
    assert plan.next_after == z("2027-01-01T10:02:00Z")


def test_run_all_runs_each_missed_fire() -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:30:00Z"), "run_all")
    assert plan == MissedPlan(run=hours(6, 7, 8, 9, 10), skipped=(), next_after=z("2027-01-01T11:00:00Z"))


def test_run_all_runs_at_most_100_the_most_recent() -> None:
    plan = plan_missed(EVERY_MINUTE, z("2027-01-01T10:00:00Z"), z("2027-01-01T12:29:30Z"), "run_all")
    assert plan.run == minutes("2027-01-01T10:50:00Z", 100)
    assert plan.skipped == minutes("2027-01-01T10:00:00Z", 50)
    assert not plan.skipped_truncated


@pytest.mark.parametrize("policy", POLICIES)
def test_enumeration_is_capped_for_an_ancient_pending_fire(policy: str) -> None:
    """Two years of an every-minute cron (about a million fires): the plan lists the 1000 most recent
    skipped instants, says it truncated, and still runs the right fires."""
    now = z("2027-01-01T00:00:30Z")
    plan = plan_missed(EVERY_MINUTE, z("2025-01-01T00:00:00Z"), now, policy)
    assert plan.skipped_truncated
    assert len(plan.skipped) == 1000
    assert plan.next_after == z("2027-01-01T00:01:00Z")
    if policy == "run_all":
        assert plan.run == minutes("2026-12-31T22:21:00Z", 100)
        assert plan.skipped == minutes("2026-12-31T05:41:00Z", 1000)
    else:
        assert plan.run == (z("2027-01-01T00:00:00Z"),)  # on time (within 60 s)
        assert plan.skipped == minutes("2026-12-31T07:20:00Z", 1000)  # 16 h 40 min before 00:00


def test_sparse_schedule_with_an_ancient_pending_fire() -> None:
    daily = parse_schedule("cron", "30 2 * * *", "Europe/Chisinau", now=NOW)
    plan = plan_missed(daily, z("2020-01-01T00:30:00Z"), z("2027-01-01T12:00:00Z"), "run_once")
    assert plan.run == (z("2027-01-01T00:30:00Z"),)  # 02:30 EET
    assert plan.skipped_truncated and len(plan.skipped) == 1000
    assert plan.skipped[-1] == z("2026-12-31T00:30:00Z")
    assert plan.next_after == z("2027-01-02T00:30:00Z")


def test_a_snoozed_pending_fire_counts_as_a_fire() -> None:
    plan = plan_missed(HOURLY, z("2027-01-01T10:07:00Z"), z("2027-01-01T12:30:00Z"), "run_once")
    assert plan.run == hours(12) and plan.skipped == (z("2027-01-01T10:07:00Z"), *hours(11))


def test_jittered_fires_are_planned_as_jittered() -> None:
    jittered = parse_schedule("cron", "0 * * * *", now=NOW, jitter_seconds=900, jitter_seed="task-1")
    j = timedelta(seconds=jittered.jitter_offset)
    plan = plan_missed(jittered, hours(6)[0] + j, hours(9)[0] + j + timedelta(minutes=5), "run_once")
    assert plan.run == (hours(9)[0] + j,)
    assert plan.skipped == tuple(h + j for h in hours(6, 7, 8))
    assert plan.next_after == hours(10)[0] + j


def test_once_and_exhausted_rules() -> None:
    once = parse_schedule("once", "2027-01-01T09:00:00Z", now=NOW)
    plan = plan_missed(once, z("2027-01-01T09:00:00Z"), z("2027-01-03T00:00:00Z"), "skip")
    assert plan == MissedPlan(run=(z("2027-01-01T09:00:00Z"),), skipped=(), next_after=None)
    rule = parse_schedule("rrule", "DTSTART:20270101T000000Z\nRRULE:FREQ=HOURLY;COUNT=3", now=NOW)
    plan = plan_missed(rule, z("2027-01-01T00:00:00Z"), z("2027-01-05T00:00:00Z"), "run_once")
    assert plan == MissedPlan(run=hours(2), skipped=hours(0, 1), next_after=None)


def test_unknown_policy_and_naive_inputs() -> None:
    with pytest.raises(ScheduleError) as caught:
        plan_missed(HOURLY, z("2027-01-01T06:00:00Z"), z("2027-01-01T10:30:00Z"), "catch_up")
    assert caught.value.field == "misfire_policy" and "'catch_up'" in caught.value.message
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_missed(HOURLY, datetime(2027, 1, 1, 6), z("2027-01-01T10:30:00Z"), "skip")
