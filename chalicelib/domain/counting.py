"""A task's run counters as values, and the rule that makes counting idempotent: every finished
run leaves a mark (a digest of its id) among the task's recent marks, and a run whose mark is
there is not counted again. How the marks are kept bounded, and the one bound that follows,
is in `store/counters.py`."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

COUNTED = ("succeeded", "failed")  # skipped runs are final but never counted
RECENT_MAX = 60  # 13 bytes a mark: the stats item stays under 1 KB
RECENT_KEEP = 20


@dataclass(frozen=True)
class Counters:
    last_run_at: str | None = None  # when the run that finished last finished
    last_run_status: str | None = None
    run_count: int = 0  # finished runs: succeeded + failed
    failure_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mark(run_id: str) -> str:
    """What `recent` remembers of a run: 72 bits of its id's SHA-256, 12 characters."""
    return base64.b64encode(hashlib.sha256(run_id.encode()).digest()[:9]).decode()


def trimmed(marks: list[str]) -> list[str] | None:
    """The marks to drop (the oldest) once `recent` outgrows RECENT_MAX; None: nothing yet."""
    if len(marks) <= RECENT_MAX:
        return None
    return marks[: len(marks) - RECENT_KEEP]
