"""`make deploy` / `make destroy`, offline: the commands the plan runs (its dry run), the templates
it deploys (cfn-lint), its own steps against moto, and that it stops at the first failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from infra import deploy
from infra.package import PackageError
from infra.stage import compact_template, params

ROOT = Path(__file__).resolve().parents[2]
AGENT = "9b0c0e4e-1111-4222-8333-444455556666"


def _dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # No credentials and no AWS CLI on PATH: a dry run must need neither.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DEPLOY_"))}
    clean.update(PATH="/usr/bin:/bin", AWS_DEFAULT_REGION="us-east-1", **env)
    return subprocess.run(
        [sys.executable, "-m", "infra.deploy", "--dry-run", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_dry_run_prints_the_chalice_path_in_order_and_runs_nothing():
    r = _dry_run("--stage", "prod")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    verbs = [
        "infra.deploy admin-token --stage prod",
        "infra.stage template --out",
        "aws cloudformation deploy --stack-name tasksapi-prod-data",
        "infra.stage configure --stage prod --stack tasksapi-prod-data",
        "chalice deploy --stage prod",
        "infra.stage finish --stage prod",
        "aws cloudformation delete-stack --stack-name tasksapi-prod-awsevents",
        "infra.deploy report --stage prod",
    ]
    assert len(lines) == len(verbs), lines
    for line, verb in zip(lines, verbs, strict=True):
        assert verb in line, (verb, line)
    stack = lines[2]
    # the stack gets exactly the stage's parameters, and a re-run with nothing to change succeeds
    for key, value in params("prod").items():
        assert f"{key}={value}" in stack
    assert "--no-fail-on-empty-changeset" in stack and "--capabilities CAPABILITY_IAM" in stack


def test_the_plan_is_the_same_every_time_and_every_stack_deploy_tolerates_no_change():
    first = deploy.deploy_plan("dev", aws_events=deploy.aws_events_params('{"source": ["aws.s3"]}', AGENT))
    again = deploy.deploy_plan("dev", aws_events=deploy.aws_events_params('{"source": ["aws.s3"]}', AGENT))
    assert first == again
    for step in first:
        if step.argv[1:3] == ("cloudformation", "deploy"):
            assert "--no-fail-on-empty-changeset" in step.argv
    assert [s.what for s in first].index("functions and API") < [s.what for s in first].index("event-source settings")


def test_aws_events_are_off_by_default_and_on_with_a_pattern_and_an_agent():
    r = _dry_run("--stage", "prod", AWS_EVENTS_PATTERN='{"source": ["aws.s3"], "detail-type": ["Object Created"]}')
    assert r.returncode == 2 and "AWS_EVENTS_AGENT" in r.stderr
    r = _dry_run("--stage", "prod", AWS_EVENTS_PATTERN="{not json", AWS_EVENTS_AGENT=AGENT)
    assert r.returncode == 2 and "not JSON" in r.stderr
    r = _dry_run(
        "--stage", "prod", AWS_EVENTS_PATTERN='{"source": ["aws.s3"]}', AWS_EVENTS_AGENT=AGENT, DEPLOY_PARAMS=""
    )
    assert r.returncode == 0, r.stderr
    events = [line for line in r.stdout.splitlines() if "tasksapi-prod-awsevents" in line]
    assert len(events) == 1 and "cloudformation deploy" in events[0]
    assert f"AwsEventsAgent={AGENT}" in events[0] and 'AwsEventsPattern={"source":["aws.s3"]}' in events[0]
    assert "FunctionPrefix=tasks-api-prod" in events[0]
    # ... and after the functions exist: the rule's permission names the aws_events function
    assert r.stdout.index("chalice deploy") < r.stdout.index("tasksapi-prod-awsevents")


def test_deploy_params_reach_the_resources_stack_and_bad_ones_stop_the_plan():
    steps = deploy.deploy_plan("prod", extra=deploy.extra_params("AlarmTopicArn=arn:aws:sns:us-east-1:1:t"))
    assert "AlarmTopicArn=arn:aws:sns:us-east-1:1:t" in steps[2].argv
    with pytest.raises(PackageError):
        deploy.extra_params("not-a-pair")
    r = _dry_run("--stage", "nope")
    assert r.returncode == 2 and "no stage 'nope'" in r.stderr


def test_cfn_lint_passes_on_every_template_the_plan_deploys(tmp_path: Path):
    steps = deploy.deploy_plan(
        "prod", aws_events=deploy.aws_events_params('{"source": ["aws.s3"]}', AGENT), build=tmp_path
    )
    templates = [s.template for s in steps if s.template is not None]
    assert len(templates) == 2
    # the compact resources template is what the "compact template" step writes
    assert compact_template(templates[0]) < 51_200, "over CloudFormation's inline template limit"
    assert json.loads(templates[0].read_text())["Resources"]["AwsEventsRole"]
    r = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), *map(str, templates)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_execute_runs_in_order_and_stops_at_the_first_failure():
    steps = deploy.deploy_plan("prod")
    ran: list[tuple[str, ...]] = []
    out: list[str] = []

    def run(argv):
        ran.append(tuple(argv))
        return 1 if "chalice" in argv[0] else 0

    assert deploy.execute(steps, run, out.append) == 1
    assert ran == [s.argv for s in steps[:5]]
    assert "step 5 (functions and API) failed" in out[-1]


def test_destroy_asks_for_confirmation_and_keeps_the_tables():
    steps = deploy.destroy_plan("prod")
    assert [s.argv[1:3] for s in steps if s.argv[0] == "aws"][0] == ("cloudformation", "delete-stack")
    assert any(s.argv[1:] == ("delete", "--stage", "prod") for s in steps)
    clean = {k: v for k, v in os.environ.items() if k != "CONFIRM"}
    r = subprocess.run(
        [sys.executable, "-m", "infra.deploy", "--destroy", "--stage", "prod"],
        cwd=ROOT,
        env={**clean, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "CONFIRM=prod" in r.stderr and "delete-stack" in r.stdout


def test_the_admin_token_is_created_once_and_never_shown(aws, capsys):
    ssm = boto3.client("ssm")
    name = "/tasksapi/test-deploy/admin-token"
    assert deploy.ensure_admin_token(ssm, name) is True
    value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert value["Type"] == "SecureString" and len(value["Value"]) >= 43
    assert deploy.ensure_admin_token(ssm, name) is False
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == value["Value"]
    assert value["Value"] not in capsys.readouterr().out


def test_the_report_prints_the_api_url_and_how_to_fetch_the_admin_token(tmp_path: Path):
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/api/"
    (tmp_path / "prod.json").write_text(
        json.dumps({"resources": [{"name": "rest_api", "resource_type": "rest_api", "rest_api_url": url}]})
    )
    text = deploy.report("prod", tmp_path)
    assert f"API URL: {url}" in text
    assert "aws ssm get-parameter --name /tasksapi/prod/admin-token --with-decryption" in text
    assert "not found" in deploy.report("prod", tmp_path / "missing")
