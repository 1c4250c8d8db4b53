"""Lean functions: each deployed function imports only what its handler needs, and the package's
trimmed SDK has a model for every AWS service the code calls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.package import SDK_SERVICES, strip_sdk, trim_sdk

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib, json, sys
import app
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"modules": sorted(sys.modules), "routes": len(app.app.routes)}))
"""
# What each function's handler imports on its first call (app.py), after `import app`.
HANDLER_IMPORTS = {
    "": [],  # the API function: chalice routes everything through app.app
    "-tick": ["chalicelib.dispatch.tick", "chalicelib.platform.metrics", "chalicelib.platform.wiring"],
    "-worker_normal": ["chalicelib.execution.worker", "chalicelib.platform.metrics"],
    "-aws_events": ["chalicelib.services.awsevents", "chalicelib.platform.metrics", "chalicelib.platform.wiring"],
}


def _loaded(suffix: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA")}
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=f"tasks-api-prod{suffix}", TASKAPI_PREFIX="tasksapi-prod-", PYTHONPATH=str(ROOT)
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *HANDLER_IMPORTS[suffix]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _has(modules: object, prefix: str) -> bool:
    assert isinstance(modules, list)
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


@pytest.mark.parametrize("suffix", list(HANDLER_IMPORTS))
def test_each_function_loads_only_what_its_handler_needs(suffix: str) -> None:
    loaded = _loaded(suffix)
    modules = loaded["modules"]
    assert _has(modules, "chalice") and _has(modules, "chalicelib.platform.config")
    # nobody but a worker loads the pipeline executor (HTTP steps, templates, the egress guard)
    executor = (
        "chalicelib.execution.pipeline",
        "chalicelib.execution.egress",
        "chalicelib.domain.templates",
        "chalicelib.domain.signing",
    )
    is_worker = suffix.startswith("-worker")
    assert all(_has(modules, m) == is_worker for m in executor), suffix
    if suffix == "":
        assert loaded["routes"], "the API function serves the routes"
        assert not _has(modules, "chalicelib.execution.worker")
    else:
        assert loaded["routes"] == 0 and not _has(modules, "chalicelib.http.api"), "event functions skip the routes"
    if suffix == "-tick":
        # the tick's cold start: no request models (pydantic), no schedule descriptions
        assert not _has(modules, "pydantic") and not _has(modules, "chalicelib.domain.contracts")
        assert not _has(modules, "cron_descriptor")


def test_without_a_function_name_everything_is_registered() -> None:
    from app import app

    assert app.routes and {"tick", "worker_high", "aws_events"} <= set(app.handler_map)


def test_the_trimmed_sdk_has_every_service_the_code_calls() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))
    called = set(re.findall(r"\bclient\(\s*\"([a-z0-9-]+)\"", source))
    assert {"sqs", "ssm", "lambda", "sns", "events"} <= called  # the scan finds the known clients
    called.add("dynamodb")  # pynamodb's client
    assert called <= set(SDK_SERVICES), called - set(SDK_SERVICES)


def test_trimming_keeps_the_used_models_and_the_sdk_files(tmp_path: Path) -> None:
    path = tmp_path / "deployment.zip"
    names = [
        "app.py",
        "botocore/__init__.py",
        "botocore/data/endpoints.json",
        "botocore/data/sqs/2012-11-05/service-2.json.gz",
        "botocore/data/s3/2006-03-01/service-2.json.gz",
        "botocore/data/ec2/2016-11-15/service-2.json.gz",
        "boto3/__init__.py",
        "boto3-1.0.dist-info/METADATA",
        "s3transfer/__init__.py",
    ]
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "x" * 1000)
    assert trim_sdk(path) > 0
    with zipfile.ZipFile(path) as zf:
        kept = set(zf.namelist())
    assert kept == set(names) - {n for n in names if "/s3/" in n or "/ec2/" in n}
    assert strip_sdk(path) > 0
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["app.py"]
