"""The local stack's state files: generations, a journal line cut short by a kill, lease expiry,
and where the state goes (TASKAPI_STATE)."""

from __future__ import annotations

import json
from pathlib import Path

from local import env as local_env
from local.state import Snapshot, Store, _expire_leases


def _frame(t: float, db: list[list[object]], sqs: object = None) -> bytes:
    body: dict[str, object] = {"t": t, "db": db}
    if sqs is not None:
        body["sqs"] = sqs
    return (json.dumps(body) + "\n").encode()


def test_a_generation_is_its_base_plus_every_whole_journal_line_and_a_torn_last_line_is_ignored(tmp_path: Path):
    # GIVEN a base with one item and a journal: a put, a delete, and a line the kill cut short
    store = Store(tmp_path)
    base = Snapshot(tables={"t": {'["a"]': {"k": {"S": "a"}}, '["b"]': {"k": {"S": "b"}}}}, time=1.0)
    gen = store.write_generation(base)
    with store.journal_path(gen).open("ab") as f:
        f.write(_frame(2.0, [["p", "t", '["c"]', {"k": {"S": "c"}}], ["d", "t", '["a"]', None]], {"q": [{"id": "m"}]}))
        f.write(_frame(3.0, [["p", "t", '["d"]', {"k": {"S": "d"}}]])[:-9])
    # WHEN it is loaded
    snap = store.load()
    # THEN the whole lines apply in order, the torn one does not
    assert set(snap.tables["t"]) == {'["b"]', '["c"]'}
    assert snap.sqs == {"q": [{"id": "m"}]}
    assert snap.time == 2.0 and snap.frames == 1 and snap.torn


def test_a_new_generation_replaces_the_old_files_and_keeps_the_state(tmp_path: Path):
    store = Store(tmp_path)
    first = store.write_generation(Snapshot(tables={"t": {'["a"]': {"k": {"S": "a"}}}}, time=1.0))
    with store.journal_path(first).open("ab") as f:
        f.write(_frame(2.0, [["p", "t", '["b"]', {"k": {"S": "b"}}]]))
    second = store.write_generation(store.load())
    assert second == first + 1 and store.generation() == second
    assert not store.base_path(first).exists() and not store.journal_path(first).exists()
    assert set(store.load().tables["t"]) == {'["a"]', '["b"]'}


def test_no_state_yet_is_an_empty_snapshot(tmp_path: Path):
    snap = Store(tmp_path / "missing").load()
    assert snap.tables == {} and snap.sqs is None and snap.frames == 0


def test_leases_of_the_stopped_process_end_and_nothing_else_changes():
    now = 1_000_000.0
    run = {"status": {"S": "running"}, "lease_until": {"N": "1000500"}}
    shard = {"key": {"S": "tick#shard#3"}, "holder": {"S": "x"}, "until": {"N": "1000040"}}
    watermark = {"key": {"S": "tick#through#3"}, "through": {"S": "1000090#~"}}
    past = {"key": {"S": "conc#k#0"}, "holder": {"S": "r"}, "until": {"N": "999000"}}
    for attrs in (run, shard, watermark, past):
        _expire_leases(attrs, now)
    assert run["lease_until"] == {"N": "999999"} and shard["until"] == {"N": "999999"}
    assert watermark == {"key": {"S": "tick#through#3"}, "through": {"S": "1000090#~"}}
    assert past["until"] == {"N": "999000"}


def test_state_goes_to_dot_data_unless_told_otherwise(tmp_path: Path):
    assert local_env.state_dir({}) == local_env.PROJECT_ROOT / ".data"
    assert local_env.state_dir({"TASKAPI_STATE": "memory"}) is None
    assert local_env.state_dir({"TASKAPI_STATE": str(tmp_path)}) == tmp_path.resolve()


def test_a_generated_admin_token_is_kept_with_the_state(tmp_path: Path):
    environ = {"TASKAPI_STATE": str(tmp_path), "MOTO_PORT": "1"}
    first = local_env.prepare(environ)
    again = local_env.prepare({"TASKAPI_STATE": str(tmp_path), "MOTO_PORT": "1"})
    assert first.generated_admin_token and first.generated_admin_token == again.generated_admin_token
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
    memory = local_env.prepare({"TASKAPI_STATE": "memory", "MOTO_PORT": "1"})
    assert memory.state_dir is None and memory.generated_admin_token != first.generated_admin_token
