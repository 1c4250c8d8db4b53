"""The session's secrets-in-logs checker (tests/secrets_seen.py) can fail: a token logged through
the service's real logger, a line of a stack's output, a value registered or only token-shaped,
and a capture that saw too little are each flagged, by event, field and kind, never by value; and
a leak fails a whole `pytest -n 2` run, as `make test` runs it."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from chalicelib.platform.log import logger
from tests.secrets_seen import CHECKER, SERVICE_LOGGERS, Checker, verdict

ROOT = Path(__file__).resolve().parents[1]


def _made_agent() -> dict[str, str]:
    """What `POST /agents` answers, in the shapes chalicelib/services/agents.py mints."""
    return {
        "token": f"tapi_{uuid.uuid4().hex}_{secrets.token_urlsafe(32)}",
        "signing_secret": "whsec_" + secrets.token_urlsafe(32),
    }


def _shown(checker: Checker) -> str:
    return "\n".join(str(f) for f in checker.findings())


def test_a_token_logged_through_the_service_logger_is_flagged_by_event_field_and_kind() -> None:
    agent = _made_agent()
    checker = Checker()
    checker.agent(agent)
    for value in agent.values():  # logged on purpose: the session's checker must see it, not flag it
        CHECKER.plant(value)
    with checker.capturing(*SERVICE_LOGGERS):
        logger.info("probe_debug", extra={"auth": f"Bearer {agent['token']}", "n": 1})
        logger.debug("probe_signing", extra={"detail": {"key": agent["signing_secret"]}})
        logger.info("probe_clean", extra={"agent_id": "a1"})
    found = {(f.source, f.event, f.where, f.kind) for f in checker.findings()}
    assert found == {
        ("logger:tasks-api", "probe_debug", "field 'auth'", "agent token"),
        ("logger:tasks-api", "probe_debug", "field 'auth'", "agent token (random part)"),
        ("logger:tasks-api", "probe_debug", "field 'auth'", "agent token (by shape)"),
        ("logger:tasks-api", "probe_debug", "field 'auth'", "bearer credential (by shape)"),
        ("logger:tasks-api", "probe_signing", "field 'detail'", "signing secret"),
        ("logger:tasks-api", "probe_signing", "field 'detail'", "signing secret (random part)"),
        ("logger:tasks-api", "probe_signing", "field 'detail'", "signing secret (by shape)"),
    }
    assert checker.summary()["lines"] == {"logger:tasks-api": 3}
    shown = _shown(checker)
    assert "probe_debug" in shown and all(v not in shown for v in agent.values())


def test_other_loggers_and_exception_texts_are_checked_too() -> None:
    canary = Checker().canary()
    checker = Checker()
    checker.secret("X-Api-Key header value", canary)
    CHECKER.plant(canary)
    with checker.capturing(*SERVICE_LOGGERS):
        logging.getLogger("probe.library").warning("sent %s", canary)
        try:
            raise RuntimeError(f"header X-Api-Key: {canary}")
        except RuntimeError:
            logger.exception("probe_crashed")
    found = {(f.source, f.event, f.where) for f in checker.findings()}
    assert found == {
        ("logger:probe.library", "(a line that is not a JSON event)", "line"),
        ("logger:tasks-api", "probe_crashed", "field 'exception'"),
    }
    assert canary not in _shown(checker)


def test_a_stack_line_with_a_secret_unregistered_or_without_its_prefix_is_flagged() -> None:
    agent, other = _made_agent(), _made_agent()
    checker = Checker()
    checker.agent(agent)
    checker.line("stack:1", json.dumps({"message": "run_retrying", "error": f"got {other['token']}"}))
    checker.line("stack:1", json.dumps({"message": "poll_failed", "x": "k=" + agent["token"][38:]}))
    checker.line("stack:1", "Traceback: signature with " + other["signing_secret"])
    checker.line("stack:1", json.dumps({"message": f"free text {other['signing_secret']}"}))
    checker.line("stack:1", json.dumps({"message": "ready", "url": "http://127.0.0.1:1", "id": uuid.uuid4().hex}))
    found = {(f.event, f.where, f.kind) for f in checker.findings()}
    assert found == {
        ("run_retrying", "field 'error'", "agent token (by shape)"),
        ("poll_failed", "field 'x'", "agent token (random part)"),
        ("(a line that is not a JSON event)", "line", "signing secret (by shape)"),
        ("(free-text message)", "field 'message'", "signing secret (by shape)"),
    }
    shown = _shown(checker)
    assert all(v not in shown for v in (*agent.values(), *other.values()))


def test_a_capture_that_saw_too_little_fails_the_verdict() -> None:
    checker = Checker()
    problems = verdict(checker, {"in_process": 50, "stack": 10}, {"stack:1": 40})
    assert len(problems) == 3, problems
    assert "stack:1 printed 40 lines, the checker saw 0" in problems[0]
    assert "50 tests ran on the in-process app" in problems[1] and "none was registered" in problems[2]
    checker.plant("planted-" + secrets.token_urlsafe(12))
    assert any("never reached" in p for p in verdict(checker, {}, {}))


def test_a_capture_that_saw_enough_and_nothing_secret_passes() -> None:
    checker = Checker()
    checker.agent(_made_agent())
    for n in range(40):
        checker.line("stack:1", json.dumps({"message": "tick", "n": n}))
    checker.line("logger:tasks-api", json.dumps({"message": "run_finished", "run_id": uuid.uuid4().hex}))
    assert verdict(checker, {"in_process": 50, "stack": 10}, {"stack:1": 40}) == []


def test_a_leak_fails_a_whole_xdist_run_and_names_event_and_kind_only(tmp_path: Path) -> None:
    """The same wiring as tests/conftest.py, in a scratch directory, under `pytest -n 2`."""
    agent = _made_agent()
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")

    def run(leak: bool) -> subprocess.CompletedProcess[str]:
        (tmp_path / "test_leaky.py").write_text(
            textwrap.dedent(f"""
            from chalicelib.platform.log import logger
            from tests.secrets_seen import CHECKER

            def test_clean():
                logger.info("probe_clean", extra={{"n": 1}})

            def test_leaky():
                CHECKER.agent({agent!r})
                if {leak}:
                    logger.info("probe_leak", extra={{"signature_key": {agent["signing_secret"]!r}}})
            """)
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", str(tmp_path)]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    clean = run(leak=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "secrets in logs:" in clean.stdout and "0 problem(s)" in clean.stdout, clean.stdout

    leaky = run(leak=True)
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    report = leaky.stdout[leaky.stdout.index("secrets in the logs") :]
    report = report[: report.index("\n\n")] if "\n\n" in report else report
    assert "signing secret, signing secret (random part), signing secret (by shape) in logger:tasks-api event" in report
    assert "'probe_leak' (field 'signature_key')" in report, leaky.stdout
    assert agent["signing_secret"] not in report and agent["signing_secret"][6:] not in report
