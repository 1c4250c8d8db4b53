"""Issue 11 through the API: the schedule cases that took seconds to minutes or answered 500
now answer at once, with a valid result or a 400 that names the field. (The step counts that
bound the engine's work are asserted in tests/unit/test_schedule_bounds.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import task_body

EVERY_DAY = "MO,TU,WE,TH,FR,SA,SU"
DENSE_YEARLY = (
    f"FREQ=YEARLY;BYDAY={EVERY_DAY};BYHOUR={','.join(map(str, range(24)))};BYMINUTE={','.join(map(str, range(60)))}"
)
FEB_29 = "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=10000"
PAST_9999 = "9999-12-31T23:59:59-01:00"  # year 10000 in UTC


def _preview(api: Any, agent: dict[str, Any], **body: Any) -> Any:
    return api.call("POST", "/schedules/preview", body, token=agent["token"])


def test_leap_day_rule_with_count_10000_previews_100_fires(api, clock):
    agent = api.agent()
    r = _preview(api, agent, schedule_kind="rrule", schedule_expr=FEB_29, count=100)
    assert r.status_code == 200, r.body
    runs = r.data["next_runs"]
    assert len(runs) == 100 and runs[0] == "2028-02-29T12:00:00Z" and all("-02-29T" in t for t in runs)


def test_a_preview_that_runs_out_of_calendar_returns_what_exists(api, clock):
    agent = api.agent()
    r = _preview(api, agent, schedule_kind="rrule", schedule_expr=FEB_29, count=100, after="9990-01-01T00:00:00Z")
    assert r.status_code == 200 and r.data["next_runs"] == ["9992-02-29T12:00:00Z", "9996-02-29T12:00:00Z"]


def test_dense_yearly_rule_previewed_after_year_8000(api, clock):
    agent = api.agent()
    r = _preview(api, agent, schedule_kind="rrule", schedule_expr=DENSE_YEARLY, count=100, after="8000-01-01T00:00:00Z")
    assert r.status_code == 200, r.body
    assert r.data["next_runs"][:2] == ["8000-01-01T00:01:00Z", "8000-01-01T00:02:00Z"]
    assert r.data["next_runs"][-1] == "8000-01-01T01:40:00Z"


def test_create_a_task_with_the_dense_rule_from_1990(api, clock):
    agent = api.agent()
    body = task_body(agent["agent_id"], schedule_kind="rrule", timezone="UTC")
    body["schedule_expr"] = f"DTSTART:19900101T000000Z\nRRULE:{DENSE_YEARLY}"
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 201, r.body
    assert r.data["next_run_at"] == "2027-03-01T12:01:00Z" and r.data["schedule_error"] is None
    got = api.call("GET", f"/tasks/{r.data['id']}/preview?count=3&after=9000-06-01T00:00:00Z", token=agent["token"])
    assert got.status_code == 200 and got.data["next_runs"][0] == "9000-06-01T00:01:00Z"


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        ("UTC", "9999-12-31T23:59:00Z", []),
        ("America/New_York", "9999-12-31T23:59:00Z", []),
        ("UTC", PAST_9999, []),
        ("America/New_York", "0001-01-01T00:00:00Z", ["0001-01-02T00:01:02Z", "0001-01-02T00:06:02Z"]),
    ],
)
def test_cron_preview_at_the_ends_of_the_calendar(api, clock, zone, after, expected):
    # New York's first offset is its local mean time, -04:56:02
    agent = api.agent()
    r = _preview(api, agent, schedule_kind="cron", schedule_expr="*/5 * * * *", timezone=zone, after=after, count=2)
    assert r.status_code == 200, r.body
    assert r.data["next_runs"] == expected


def test_starts_at_in_year_1_is_accepted_with_four_digit_years(api, clock):
    agent = api.agent()
    body = task_body(agent["agent_id"], starts_at="0001-01-01T00:00:00Z", ends_at="9999-12-31T23:59:59Z")
    r = api.call("POST", "/tasks", body, token=agent["token"])
    assert r.status_code == 201, r.body
    assert r.data["starts_at"] == "0001-01-01T00:00:00Z" and r.data["next_run_at"] == "2027-03-02T00:30:00Z"
    p = api.call("GET", f"/tasks/{r.data['id']}/preview?count=1", token=agent["token"])
    assert p.status_code == 200 and "not before 0001-01-01T00:00:00Z" in p.data["description"]


@pytest.mark.parametrize("name", ["starts_at", "ends_at"])
def test_a_bound_past_year_9999_in_utc_is_a_400_naming_it(api, clock, name):
    agent = api.agent()
    r = api.call("POST", "/tasks", task_body(agent["agent_id"], **{name: PAST_9999}), token=agent["token"])
    assert r.status_code == 400, r.body
    assert [e["field"] for e in r.data["errors"]] == [name]
    p = _preview(api, agent, schedule_kind="cron", schedule_expr="0 9 * * *", **{name: PAST_9999})
    assert p.status_code == 400 and [e["field"] for e in p.data["errors"]] == [name]


def test_a_rule_that_never_fires_is_refused_at_create_update_and_preview(api, clock):
    agent = api.agent()
    never = "DTSTART:20270101T030000Z\nRRULE:FREQ=MINUTELY;INTERVAL=1440;BYHOUR=5"
    p = _preview(api, agent, schedule_kind="rrule", schedule_expr=never)
    c = api.call(
        "POST",
        "/tasks",
        task_body(agent["agent_id"], schedule_kind="rrule", schedule_expr=never, timezone="UTC"),
        token=agent["token"],
    )
    t = api.call("POST", "/tasks", task_body(agent["agent_id"], timezone="UTC"), token=agent["token"]).data
    u = api.call("PUT", f"/tasks/{t['id']}", {"schedule_kind": "rrule", "schedule_expr": never}, token=agent["token"])
    for r in (p, c, u):
        assert r.status_code == 400, r.body
        [error] = r.data["errors"]
        assert error["field"] == "schedule_expr" and "never" in error["message"]
