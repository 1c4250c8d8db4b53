"""`make deploy STAGE=prod`: the `chalice deploy` path end to end, in one command; `make destroy`.

    python -m infra.deploy [--stage prod] [--dry-run]             # deploy (idempotent)
    python -m infra.deploy --destroy [--stage prod] [--dry-run]   # needs CONFIRM=<stage>
    python -m infra.deploy admin-token|report --stage prod        # steps the plan runs

A deploy is a plan of commands, built first (pure: `deploy_plan`) and then run in order
(`execute`), stopping at the first failure. `--dry-run` prints the plan and runs nothing (no AWS
credentials needed). Every step is safe to repeat, so re-running `make deploy` after a failure or
a code change converges: `cloudformation deploy --no-fail-on-empty-changeset`, a parameter created
only when missing, the stage config rewritten with the same values, `chalice deploy`, and
ReportBatchItemFailures turned on again (chalice may recreate an event source mapping).

1. the admin-token SecureString, created once with a random value (never printed);
2. the resources stack from `infra/resources.json` (compacted under CloudFormation's inline limit)
   with the stage's parameters, plus `DEPLOY_PARAMS` ("K=V K=V": pipeline targets, alarm topic);
3. the stage config: the stack's role ARNs into `.chalice/config.json`;
4. `chalice deploy`;
5. the event-source settings: ReportBatchItemFailures on the three SQS event sources;
6. AWS events in (off unless `AWS_EVENTS_PATTERN` is set): the `infra/awsevents.json` stack — an
   EventBridge rule with that pattern, feeding the `aws_events` function for `AWS_EVENTS_AGENT`;
   when off, that stack is deleted (a no-op when it does not exist);
7. the report: the API URL and how to fetch the admin token.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.package import CONFIG_PATH, PackageError, load_config, stage_of

ROOT = Path(__file__).resolve().parent.parent
AWS_EVENTS_TEMPLATE = Path(__file__).with_name("awsevents.json")


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]
    template: Path | None = None  # the CloudFormation template this step deploys

    def line(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Names:
    stage: str
    prefix: str
    function_prefix: str
    admin_token_param: str

    @property
    def data_stack(self) -> str:
        return f"{self.prefix.rstrip('-')}-data"

    @property
    def events_stack(self) -> str:
        return f"{self.prefix.rstrip('-')}-awsevents"


def names(stage_name: str, config_path: Path = CONFIG_PATH) -> Names:
    stage = stage_of(load_config(config_path), stage_name)
    return Names(stage_name, stage.prefix, stage.function_prefix, stage.admin_token_param)


def _overrides(values: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def extra_params(raw: str) -> dict[str, str]:
    """DEPLOY_PARAMS: whitespace-separated Key=Value pairs for the resources stack."""
    out = {}
    for item in shlex.split(raw or ""):
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise PackageError(f"DEPLOY_PARAMS: {item!r} is not Key=Value")
        out[key] = value
    return out


def aws_events_params(pattern: str, agent: str) -> dict[str, str] | None:
    """The AWS-events stack's settings, checked before anything is deployed; None: off."""
    if not pattern.strip():
        return None
    try:
        parsed = json.loads(pattern)
    except ValueError as e:
        raise PackageError(f"AWS_EVENTS_PATTERN is not JSON: {e}") from None
    if not isinstance(parsed, dict) or not parsed:
        raise PackageError("AWS_EVENTS_PATTERN must be a non-empty JSON object (an EventBridge event pattern)")
    try:
        agent_id = str(uuid.UUID(agent))
    except ValueError:
        raise PackageError("AWS_EVENTS_AGENT must be the agent id (a UUID) whose event tasks get the events") from None
    return {"AwsEventsPattern": json.dumps(parsed, separators=(",", ":")), "AwsEventsAgent": agent_id}


def deploy_plan(
    stage_name: str,
    *,
    extra: dict[str, str] | None = None,
    aws_events: dict[str, str] | None = None,
    python: str = sys.executable,
    chalice: str | None = None,
    aws: str = "aws",
    build: Path = ROOT / "build",
    config_path: Path = CONFIG_PATH,
) -> list[Step]:
    from infra.stage import params

    n = names(stage_name, config_path)
    chalice = chalice or str(Path(python).with_name("chalice"))
    template = build / stage_name / "resources.json"
    stack_params = {**params(stage_name, config_path), **(extra or {})}
    steps = [
        Step("admin token", (python, "-m", "infra.deploy", "admin-token", "--stage", stage_name)),
        Step("compact template", (python, "-m", "infra.stage", "template", "--out", str(template))),
        Step(
            "resources stack",
            (
                aws,
                "cloudformation",
                "deploy",
                "--stack-name",
                n.data_stack,
                "--template-file",
                str(template),
                "--capabilities",
                "CAPABILITY_IAM",
                "--no-fail-on-empty-changeset",
                "--parameter-overrides",
                *_overrides(stack_params),
            ),  # fmt: skip
            template=template,
        ),
        Step(
            "stage config", (python, "-m", "infra.stage", "configure", "--stage", stage_name, "--stack", n.data_stack)
        ),
        Step("functions and API", (chalice, "deploy", "--stage", stage_name)),
        Step("event-source settings", (python, "-m", "infra.stage", "finish", "--stage", stage_name)),
    ]
    if aws_events is not None:
        events_params = {"Prefix": n.prefix, "FunctionPrefix": n.function_prefix, **aws_events}
        steps.append(
            Step(
                "AWS events in",
                (
                    aws,
                    "cloudformation",
                    "deploy",
                    "--stack-name",
                    n.events_stack,
                    "--template-file",
                    str(AWS_EVENTS_TEMPLATE),
                    "--no-fail-on-empty-changeset",
                    "--parameter-overrides",
                    *_overrides(events_params),
                ),  # fmt: skip
                template=AWS_EVENTS_TEMPLATE,
            )
        )
    else:
        steps.append(Step("AWS events off", (aws, "cloudformation", "delete-stack", "--stack-name", n.events_stack)))
    steps.append(Step("report", (python, "-m", "infra.deploy", "report", "--stage", stage_name)))
    return steps


def destroy_plan(
    stage_name: str,
    *,
    python: str = sys.executable,
    chalice: str | None = None,
    aws: str = "aws",
    config_path: Path = CONFIG_PATH,
) -> list[Step]:
    n = names(stage_name, config_path)
    chalice = chalice or str(Path(python).with_name("chalice"))
    wait = (aws, "cloudformation", "wait", "stack-delete-complete", "--stack-name")
    return [
        Step("AWS events stack", (aws, "cloudformation", "delete-stack", "--stack-name", n.events_stack)),
        Step("AWS events stack gone", (*wait, n.events_stack)),
        Step("functions and API", (chalice, "delete", "--stage", stage_name)),
        Step("resources stack", (aws, "cloudformation", "delete-stack", "--stack-name", n.data_stack)),
        Step("resources stack gone", (*wait, n.data_stack)),
    ]


Runner = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(list(argv), cwd=ROOT).returncode


def execute(steps: list[Step], run: Runner = _run, out: Callable[[str], None] = print) -> int:
    """Run the steps in order; stop at the first that fails and say which. Returns an exit code."""
    for i, step in enumerate(steps, 1):
        out(f"==> [{i}/{len(steps)}] {step.what}: {step.line()}")
        rc = run(step.argv)
        if rc != 0:
            out(f"!!! step {i} ({step.what}) failed with exit code {rc}; fix it and run the same command again")
            return rc
    return 0


# ---- steps that are ours ----------------------------------------------------------------------


def ensure_admin_token(ssm: object, parameter: str) -> bool:
    """Create the admin-token SecureString with a random value when it does not exist; True if
    created. The value is never printed or returned."""
    try:
        ssm.get_parameter(Name=parameter)  # type: ignore[attr-defined]
        return False
    except ssm.exceptions.ParameterNotFound:  # type: ignore[attr-defined]
        pass
    ssm.put_parameter(  # type: ignore[attr-defined]
        Name=parameter,
        Type="SecureString",
        Value=secrets.token_urlsafe(32),
        Description="Tasks API admin token (infra/deploy.py)",
    )
    return True


def report(stage_name: str, deployed_dir: Path = ROOT / ".chalice" / "deployed") -> str:
    n = names(stage_name)
    path = deployed_dir / f"{stage_name}.json"
    url = None
    if path.exists():
        for res in json.loads(path.read_text()).get("resources", []):
            if res.get("resource_type") == "rest_api":
                url = res.get("rest_api_url")
    fetch = (
        f"aws ssm get-parameter --name {n.admin_token_param} --with-decryption --query Parameter.Value --output text"
    )
    return "\n".join(
        [
            f"API URL: {url or f'(not found in {path}: did chalice deploy run?)'}",
            f"Admin token: {fetch}",
            f"First call: curl -s {url or '$API'}/health",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", choices=("admin-token", "report"))
    ap.add_argument("--stage", default="prod")
    ap.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    ap.add_argument("--destroy", action="store_true", help="remove the stage (CONFIRM=<stage> to run)")
    args = ap.parse_args(argv)
    try:
        if args.command == "admin-token":
            import boto3

            n = names(args.stage)
            created = ensure_admin_token(boto3.client("ssm"), n.admin_token_param)
            print(f"{n.admin_token_param}: {'created (random)' if created else 'exists, kept'}")
            return 0
        if args.command == "report":
            print(report(args.stage))
            return 0
        if args.destroy:
            steps = destroy_plan(args.stage)
            if not args.dry_run and os.environ.get("CONFIRM") != args.stage:
                print(f"make destroy deletes stage {args.stage}'s functions, API, queues and roles:")
                for step in steps:
                    print(f"  {step.line()}")
                print(f"run it with CONFIRM={args.stage}", file=sys.stderr)
                return 2
        else:
            steps = deploy_plan(
                args.stage,
                extra=extra_params(os.environ.get("DEPLOY_PARAMS", "")),
                aws_events=aws_events_params(
                    os.environ.get("AWS_EVENTS_PATTERN", ""), os.environ.get("AWS_EVENTS_AGENT", "")
                ),
                aws=os.environ.get("AWS_CLI", "aws"),
            )
    except PackageError as e:
        print(e, file=sys.stderr)
        return 2
    if args.dry_run:
        for step in steps:
            print(step.line())
        return 0
    rc = execute(steps)
    if rc == 0 and args.destroy:
        n = names(args.stage)
        print(
            "Kept (DeletionPolicy Retain, delete by hand to start over): the tables "
            f"{n.prefix}{{tasks,runs,agents,keys,due,events}} and the parameter {n.admin_token_param}"
        )
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
