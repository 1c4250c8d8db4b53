"""Run history: a task's runs newest first with an opaque cursor, and single runs."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

from chalicelib.domain.errors import InvalidInput, RunNotFound
from chalicelib.domain.records import Task
from chalicelib.domain.validation import query_int, raise_if, unknown_query
from chalicelib.store import runs, stores

RUN_QUERY = {"limit", "cursor"}
MAX_CURSOR_CHARS = 256
_RUN_ID = re.compile(r"[A-Za-z0-9#:._-]{1,128}")


def _cursor(run_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"r": run_id}).encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> str:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["r"]
        # A run id is what the cursor carries: anything else would reach DynamoDB as a key.
        if not isinstance(value, str) or not _RUN_ID.fullmatch(value):
            raise ValueError
        return value
    except (ValueError, KeyError, TypeError, RecursionError):
        raise InvalidInput.field("cursor", "is not a cursor this API returned") from None


def list_runs(task: Task, query: dict[str, str], now: datetime) -> dict[str, Any]:
    errors = unknown_query(query, RUN_QUERY)
    limit = query_int(query, "limit", 50, 1, 200, errors)
    raise_if(errors)
    before = _uncursor(query["cursor"]) if "cursor" in query else None
    page = stores().runs.newest_first(task.task_id, before=before, limit=limit, now=now)
    last = page.runs[-1].run_id if page.runs else None
    return {"runs": [dict(r.doc) for r in page.runs], "next_cursor": _cursor(last) if page.more and last else None}


def get_run(task: Task, run_id: str, now: datetime) -> dict[str, Any]:
    if len(run_id) > 64:
        raise RunNotFound(f"run {run_id} not found")
    rec = runs.get(task.task_id, run_id, now)
    if rec is None:
        raise RunNotFound(f"run {run_id} not found")
    return dict(rec.doc)
