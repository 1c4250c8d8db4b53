"""Retries, Retry-After and error parsing, against scripted HTTP answers (httpx's own
MockTransport stands in for the network; no SDK code is patched)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import tasksapi
from tasksapi import _routes as routes
from tasksapi._http import MAX_RETRY_WAIT, retry_delay

from tests.clients.conftest import run_async

TASK: dict[str, Any] = {
    "id": "7f1d2c3e-0000-4000-8000-000000000001",
    "title": "t",
    "description": "",
    "schedule_kind": "event",
    "schedule_expr": None,
    "timezone": "UTC",
    "payload": {"steps": [{"id": "a", "type": "log", "message": "x"}]},
    "created_by": "7f1d2c3e-0000-4000-8000-000000000002",
    "status": "active",
    "created_at": "2027-01-01T00:00:00Z",
    "updated_at": "2027-01-01T00:00:00Z",
    "version": 1,
    "from_a_newer_server": "a field this SDK does not know",
}
RUN = {"id": "r1", "task_id": TASK["id"], "trigger": "run_now", "status": "queued", "steps": []}


def scripted(answers: list[httpx.Response | Exception]) -> tuple[tasksapi.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return tasksapi.Client("http://api.test", "tapi_x_y", http_client=http, max_retries=2), seen


def problem(status: int, headers: dict[str, str] | None = None, **extra: object) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": f"status {status}", **extra}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json", **(headers or {})})


def test_create_retries_a_429_after_retry_after_with_the_same_idempotency_key() -> None:
    client, seen = scripted([problem(429, {"Retry-After": "0"}), httpx.Response(201, json=TASK)])
    task = client.tasks.create(title="t")
    assert task.id == TASK["id"] and len(seen) == 2
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1 and keys.pop().startswith("tasksapi-")
    # a field the SDK does not know yet is kept, not refused
    assert task.model_extra == {"from_a_newer_server": "a field this SDK does not know"}


def test_create_retries_5xx_and_connection_errors() -> None:
    client, seen = scripted(
        [problem(503, {"Retry-After": "0"}), httpx.ConnectError("refused"), httpx.Response(201, json=TASK)]
    )
    assert client.tasks.create(title="t").id == TASK["id"]
    assert len(seen) == 3 and len({r.headers["Idempotency-Key"] for r in seen}) == 1


def test_a_create_still_in_progress_is_tried_again_but_other_conflicts_are_not() -> None:
    client, seen = scripted([problem(409), httpx.Response(201, json=TASK)])
    assert client.tasks.create(title="t").id == TASK["id"] and len(seen) == 2
    client, seen = scripted([problem(409)])
    with pytest.raises(tasksapi.Conflict):
        client.tasks.pause(TASK["id"])
    assert len(seen) == 1


def test_a_snooze_is_not_resent_after_an_ambiguous_failure() -> None:
    client, seen = scripted([problem(503, {"Retry-After": "0"})])
    with pytest.raises(tasksapi.ServerError) as e:
        client.tasks.snooze(TASK["id"], 60)
    assert e.value.status == 503 and len(seen) == 1

    client, seen = scripted([httpx.ReadTimeout("slow")])
    with pytest.raises(tasksapi.NetworkError, match="ReadTimeout"):
        client.tasks.run_now(TASK["id"])
    assert len(seen) == 1


def test_a_request_that_never_left_is_resent_even_when_not_idempotent() -> None:
    client, seen = scripted([httpx.ConnectError("refused"), httpx.Response(202, json={"run": RUN})])
    assert client.tasks.run_now(TASK["id"]).id == "r1" and len(seen) == 2


def test_reads_retry_timeouts_until_the_budget_is_spent() -> None:
    client, seen = scripted([httpx.ReadTimeout("slow")] * 3)
    with pytest.raises(tasksapi.NetworkError):
        client.tasks.get(TASK["id"])
    assert len(seen) == 3  # the first try and max_retries=2


def test_a_429_without_retry_after_is_a_quota_and_is_raised_at_once() -> None:
    client, seen = scripted([problem(429)])
    with pytest.raises(tasksapi.RateLimited) as e:
        client.tasks.create(title="t")
    assert len(seen) == 1 and e.value.retry_after is None and e.value.status == 429


def test_retry_after_is_the_wait_and_a_long_one_is_not_waited_out() -> None:
    call = routes.get_task("x")
    assert retry_delay(call, 1, 2, problem(429, {"Retry-After": "7"})) == 7
    assert retry_delay(call, 1, 2, problem(503, {"Retry-After": "3"})) == 3
    assert retry_delay(call, 1, 2, problem(429, {"Retry-After": str(int(MAX_RETRY_WAIT) + 1)})) is None
    assert retry_delay(call, 3, 2, problem(429, {"Retry-After": "1"})) is None  # budget spent
    assert retry_delay(call, 1, 2, problem(404)) is None
    delay = retry_delay(call, 1, 2, problem(502))
    assert delay is not None and 0 <= delay <= 1.0  # full jitter over 0.5 × 2^1
    client, _ = scripted([problem(429, {"Retry-After": "120"})])
    with pytest.raises(tasksapi.RateLimited) as e:
        client.tasks.get("x")
    assert e.value.retry_after == 120


@pytest.mark.parametrize(
    ("answer", "cls", "text"),
    [
        (problem(400, errors=[{"field": "priority", "message": "must be ≤ 9"}]), tasksapi.BadRequest, "priority"),
        (problem(401), tasksapi.Unauthorized, "401"),
        (problem(403), tasksapi.Forbidden, "403"),
        (problem(404), tasksapi.NotFound, "404"),
        (problem(405), tasksapi.MethodNotAllowed, "405"),
        (problem(409), tasksapi.Conflict, "409"),
        (problem(412), tasksapi.PreconditionFailed, "412"),
        (problem(413), tasksapi.PayloadTooLarge, "413"),
        (problem(418), tasksapi.ApiError, "418"),
        (httpx.Response(502, text="<html>bad gateway</html>"), tasksapi.ServerError, "bad gateway"),
    ],
)
def test_each_status_has_its_error_class(answer: httpx.Response, cls: type[tasksapi.ApiError], text: str) -> None:
    client, _ = scripted([answer] * 3)
    with pytest.raises(cls) as e:
        client.tasks.get("x")
    assert type(e.value) is cls and text in str(e.value) and e.value.status == answer.status_code


def test_the_async_client_retries_the_same_way() -> None:
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [problem(429, {"Retry-After": "0"}), httpx.Response(201, json=TASK)]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def go() -> str:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        async with tasksapi.AsyncClient("http://api.test", "tapi_x_y", http_client=http) as c:
            return (await c.tasks.create(title="t", created_by=TASK["created_by"])).id

    assert run_async(go()) == TASK["id"]
    assert len(seen) == 2 and seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]


def test_ids_cannot_change_the_route() -> None:
    client, seen = scripted([problem(404)] * 3)
    with pytest.raises(tasksapi.NotFound):
        client.runs.get("a/../../agents", "b?x=1")
    assert seen[0].url.raw_path == b"/tasks/a%2F..%2F..%2Fagents/runs/b%3Fx%3D1"
    with pytest.raises(ValueError):
        client.tasks.get("")
