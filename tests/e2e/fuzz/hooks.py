"""Schemathesis hooks (SCHEMATHESIS_HOOKS=hooks): a task belongs to the agent that creates it, so a
valid body names the fuzzing agent; without this every generated task would be another agent's (403)
and the stateful phase would never reach a real task."""

from __future__ import annotations

import os
from typing import Any

import schemathesis

AGENT_ID = os.environ["FUZZ_AGENT_ID"]
_OWNED = {("POST", "/tasks"), ("PUT", "/tasks/{task_id}")}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    key = (case.operation.method.upper(), case.operation.path)
    if positive and key in _OWNED and isinstance(case.body, dict) and "created_by" in case.body:
        case.body["created_by"] = AGENT_ID
