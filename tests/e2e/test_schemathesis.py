"""Schemathesis, an independent fuzzer, against the live local stack's own /openapi.json: every
operation, examples + coverage + fuzzing + the stateful phase through the document's OpenAPI links
(create → get → update → lifecycle → runs), with a fixed seed and a bounded budget. Zero failures.

The checks: not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, negative_data_rejection and positive_data_acceptance (see
fuzz/schemathesis.toml for the operations where a 400 is also "accepting" valid-looking data)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from tests.secrets_seen import CHECKER
from tests.stack import LocalStack

FUZZ = Path(__file__).parent / "fuzz"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)
SEED = 20261203
MAX_EXAMPLES = 8

pytestmark = pytest.mark.e2e


def test_schemathesis_finds_nothing_against_the_served_openapi(local_stack: LocalStack, tmp_path: Path) -> None:
    agent = requests.post(
        f"{local_stack.base_url}/agents", json={"name": "schemathesis"}, headers=local_stack.admin(), timeout=10
    ).json()
    CHECKER.agent(agent)
    st = Path(sys.executable).with_name("st")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "hooks",
        "PYTHONPATH": str(FUZZ),
        "FUZZ_AGENT_ID": agent["agent_id"],
        "NO_COLOR": "1",
    }
    cmd = [
        str(st),
        "--config-file",
        str(FUZZ / "schemathesis.toml"),
        "run",
        f"{local_stack.base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        "200",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "-H",
        f"Authorization: Bearer {agent['token']}",
        "--report",
        "junit",
        "--report-junit-path",
        str(tmp_path / "junit.xml"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=FUZZ)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]

    # The run really ran: every operation in the document was tested (schemathesis leaves out the
    # document's own route), each with generated cases, and the report holds no failure.
    doc = requests.get(f"{local_stack.base_url}/openapi.json", timeout=10).json()
    documented = {f"{m.upper()} {path}" for path, methods in doc["paths"].items() for m in methods}
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    tested = {c.get("name") for c in suite.iter("testcase")}
    assert documented - {"GET /openapi.json"} <= tested, documented - tested
    assert "Stateful tests" in tested
    assert not list(suite.iter("failure")) and not list(suite.iter("error"))
    assert "✅ Stateful" in out, out[-4000:]

    # ... and the stateful phase reached real tasks: the fuzzing agent owns tasks it created, and
    # at least one of them was moved through its lifecycle by a linked call.
    token = {"Authorization": f"Bearer {agent['token']}"}
    tasks = requests.get(f"{local_stack.base_url}/tasks?limit=200", headers=token, timeout=10).json()["tasks"]
    assert tasks, "the fuzzer never created a task"
    assert any(t["status"] != "active" or t["version"] > 1 for t in tasks), [t["status"] for t in tasks]
