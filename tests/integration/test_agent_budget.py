"""Per-agent run budgets through the HTTP API, on DynamoDB (moto): the admin sets and reads an
agent's budget (`PUT/GET /agents/{agent_id}/budget`), bad fields are 400s naming the field,
only the admin sets it, and a run now over the agent's budget is answered and recorded skipped."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.platform.config import settings
from tests.integration.conftest import ADMIN, task_body
from tests.integration.harness import run_records


def _budget(api: Any, agent_id: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return api.call("PUT", f"/agents/{agent_id}/budget", body, headers=ADMIN if headers is None else headers)


def test_admin_sets_and_reads_an_agents_budget_and_the_agent_reads_its_own(api):
    agent, other = api.agent("a"), api.agent("b")
    aid = agent["agent_id"]
    s = settings()
    defaults = {
        "runs_per_minute": s.agent_runs_per_minute,
        "runs_burst": s.agent_runs_burst,
        "runs_in_flight": s.agent_runs_in_flight,
        "min_interval_seconds": s.min_interval_seconds,
    }
    unset = dict.fromkeys(defaults)
    # GIVEN a new agent: the defaults apply
    fresh = api.call("GET", f"/agents/{aid}/budget", headers=ADMIN)
    assert fresh.status_code == 200, fresh.body
    assert fresh.data == {"agent_id": aid, "effective": defaults, "agent": unset, "defaults": defaults}
    # WHEN the admin sets part of it
    r = _budget(api, aid, {"runs_per_minute": 30, "runs_in_flight": 2, "min_interval_seconds": 300})
    assert r.status_code == 200, r.body
    own = {**unset, "runs_per_minute": 30, "runs_in_flight": 2, "min_interval_seconds": 300}
    assert r.data == {"agent_id": aid, "effective": {**defaults, **{k: v for k, v in own.items() if v}}, "agent": own,
                      "defaults": defaults}  # fmt: skip
    # THEN the admin and the agent itself read it; another agent may not
    assert api.call("GET", f"/agents/{aid}/budget", headers=ADMIN).data == r.data
    assert api.call("GET", f"/agents/{aid}/budget", token=agent["token"]).data == r.data
    assert api.call("GET", f"/agents/{aid}/budget", token=other["token"]).status_code == 403
    # and a PUT replaces it: what is left out goes back to the default
    back = _budget(api, aid, {"runs_burst": 9})
    assert (
        back.data["agent"] == {**unset, "runs_burst": 9}
        and back.data["effective"]["runs_per_minute"] == s.agent_runs_per_minute
    )


def test_only_the_admin_sets_a_budget(api):
    agent = api.agent()
    mine = {"Authorization": f"Bearer {agent['token']}"}
    r = _budget(api, agent["agent_id"], {"runs_per_minute": 100_000}, headers=mine)
    assert r.status_code == 403 and r.headers["Content-Type"] == "application/problem+json"
    assert (
        api.call("GET", f"/agents/{agent['agent_id']}/budget", headers=ADMIN).data["agent"]["runs_per_minute"] is None
    )


def test_unknown_agents_are_404(api):
    for aid in ("0b7e1c5e-8d2a-4c55-9f11-2a1e6f6c0d01", "not-a-uuid"):
        assert _budget(api, aid, {}).status_code == 404, aid
        assert api.call("GET", f"/agents/{aid}/budget", headers=ADMIN).status_code == 404, aid


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"runs_per_minute": -1}, "runs_per_minute"),
        ({"runs_per_minute": 100_001}, "runs_per_minute"),
        ({"runs_per_minute": "10"}, "runs_per_minute"),
        ({"runs_burst": 0}, "runs_burst"),
        ({"runs_in_flight": 101}, "runs_in_flight"),
        ({"runs_in_flight": 1.5}, "runs_in_flight"),
        ({"min_interval_seconds": 30}, "min_interval_seconds"),  # below the engine's minute
        ({"min_interval_seconds": 86_401}, "min_interval_seconds"),
        ({"min_interval_seconds": True}, "min_interval_seconds"),
        ({"runs_per_day": 5}, "runs_per_day"),
    ],
)
def test_bad_fields_are_400s_naming_the_field(api, body, field):
    agent = api.agent()
    r = _budget(api, agent["agent_id"], body)
    assert r.status_code == 400, r.body
    assert r.headers["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in r.data["errors"]] == [field]
    assert api.call("GET", f"/agents/{agent['agent_id']}/budget", headers=ADMIN).data["agent"]["runs_burst"] is None


def test_run_now_over_budget_is_answered_skipped_and_a_raised_interval_refuses_a_schedule(api, workers):
    agent = api.agent()
    assert (
        _budget(
            api, agent["agent_id"], {"runs_per_minute": 1, "runs_burst": 1, "min_interval_seconds": 600}
        ).status_code
        == 200
    )
    too_often = api.call(
        "POST", "/tasks", task_body(agent["agent_id"], schedule_expr="*/5 * * * *"), token=agent["token"]
    )
    assert too_often.status_code == 400, too_often.body
    assert [e["field"] for e in too_often.data["errors"]] == ["schedule_expr"]
    t = api.call("POST", "/tasks", task_body(agent["agent_id"], schedule_expr="0 * * * *"), token=agent["token"]).data
    first = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    second = api.call("POST", f"/tasks/{t['id']}/run_now", token=agent["token"])
    assert first.status_code == second.status_code == 202
    assert first.data["run"]["status"] == "queued"
    assert (second.data["run"]["status"], second.data["run"]["skip_reason"]) == ("skipped", "budget_exceeded")
    workers.drain()
    got = {r["id"]: (r["status"], r["skip_reason"]) for r in run_records(t["id"])}
    assert got == {
        first.data["run"]["id"]: ("succeeded", None),
        second.data["run"]["id"]: ("skipped", "budget_exceeded"),
    }
