"""Request models: strictness and the field names errors report."""

from __future__ import annotations

import pytest

from chalicelib.domain.contracts import TaskCreate
from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.validation import json_body, parse

BASE = {
    "title": "t",
    "description": "",
    "schedule_kind": "cron",
    "schedule_expr": "* * * * *",
    "payload": {"steps": [{"id": "a", "type": "log", "message": "x"}]},
    "created_by": "00000000-0000-4000-8000-000000000000",
}


def _fields(data):
    with pytest.raises(InvalidInput) as e:
        parse(TaskCreate, data)
    return [f.field for f in e.value.errors]


def test_valid_body_gets_defaults():
    t = parse(TaskCreate, BASE)
    assert (t.priority, t.max_retries, t.timezone, t.misfire_policy) == (5, 3, "UTC", "run_once")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"priority": True}, "priority"),  # bools are not integers here
        ({"priority": "3"}, "priority"),  # no string coercion
        ({"title": None}, "title"),
        ({"payload": {"steps": [{"id": "a", "type": "http", "url": "gopher://x"}]}}, "payload.steps[0].url"),
        ({"payload": {"steps": [{"id": "a b", "type": "log", "message": "x"}]}}, "payload.steps[0].id"),
        ({"payload": {"steps": [{"id": "a", "type": "sqs"}]}}, "payload.steps[0].queue_url"),
        ({"extra": 1}, "extra"),
    ],
)
def test_errors_name_the_field(patch, field):
    assert field in _fields({**BASE, **patch})


def test_json_body_limits_and_errors():
    with pytest.raises(InvalidInput):
        json_body(b"{", 100)
    with pytest.raises(InvalidInput):
        json_body(b"", 100)
    assert json_body(b"", 100, required=False) == {}
    from chalicelib.domain.errors import TooLarge

    with pytest.raises(TooLarge):
        json_body(b"[" + b" " * 200 + b"]", 100)
