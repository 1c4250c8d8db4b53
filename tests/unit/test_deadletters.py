"""The dead-letter sweep on the in-memory stores and queues: a dead-lettered run is finished
`failed` / `dead_lettered` and its message deleted; a final run's message is just deleted; a run
executing under a live lease keeps its message; an undecodable body is dropped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from chalicelib import store
from chalicelib.dispatch import deadletters, queue
from chalicelib.dispatch.queue import DeadLetter
from chalicelib.domain.records import RunStatus
from chalicelib.domain.runs import RunMessage
from chalicelib.domain.timefmt import epoch
from chalicelib.store import runs
from tests.unit.memory import installed

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
TASK = "00000000-0000-4000-8000-0000000000e1"


@pytest.fixture()
def q() -> Iterator[queue.MemoryRunQueues]:
    queues = queue.MemoryRunQueues()
    with installed(store.in_memory(), queues, lambda: NOW.timestamp()):
        yield queues


def _msg(n: int) -> RunMessage:
    fire = epoch(NOW) - 60 * n
    return RunMessage(TASK, runs.scheduled_run_id(TASK, fire, 1), "agent-1", "schedule", fire, 1)


def _status(msg: RunMessage) -> tuple[RunStatus, str | None] | None:
    run = store.stores().runs.get(TASK, msg.run_id)
    return None if run is None else (run.status, (run.doc.get("error") or {}).get("type"))


def test_the_sweep_fails_dead_lettered_runs_and_deletes_their_messages(q: queue.MemoryRunQueues) -> None:
    queued, missing, done, running = _msg(1), _msg(2), _msg(3), _msg(4)
    assert runs.put_new(queued, runs.new_doc(queued, status="queued", max_attempts=3, now=NOW), NOW)
    final = runs.new_doc(done, status="succeeded", max_attempts=3, now=NOW)
    final["finished_at"] = "2027-03-01T11:57:01Z"
    assert runs.put_new(done, final, NOW)
    live = runs.new_run(running, runs.new_doc(running, status="queued", max_attempts=3, now=NOW), NOW)
    assert store.stores().runs.put_if_absent(live.evolve(status=RunStatus.RUNNING, lease_until=epoch(NOW) + 60))
    q.dead["normal"] = [DeadLetter(m.to_json(), None, f"h{n}") for n, m in enumerate((queued, missing, done, running))]
    q.dead["low"] = [DeadLetter("{not json", "undecodable run message", "bad")]

    assert deadletters.sweep(NOW) == 2
    assert _status(queued) == (RunStatus.FAILED, "dead_lettered")
    assert _status(missing) == (RunStatus.FAILED, "dead_lettered")  # created failed: never silent
    assert _status(done) == (RunStatus.SUCCEEDED, None)  # final: untouched
    assert _status(running) == (RunStatus.RUNNING, None)  # its worker records the outcome
    assert [d.handle for d in q.dead["normal"]] == ["h3"] and q.dead["low"] == []
    c = store.stores().stats.read(TASK)
    assert (c.run_count, c.failure_count) == (3, 2)  # the succeeded one, and the two failed here
    # a second sweep finds only the live run's message, and fails nothing twice
    assert deadletters.sweep(NOW) == 0 and store.stores().stats.read(TASK).failure_count == 2
