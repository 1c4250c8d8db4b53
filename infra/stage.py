"""The `chalice deploy` path: hand the infra/ stack to a chalice stage, and finish what
`chalice deploy` cannot do itself.

    python -m infra.stage template  --out build/resources.json   # resources.json compacted (< 51,200 bytes)
    python -m infra.stage params    --stage prod                 # Key=Value for `aws cloudformation deploy`
    python -m infra.stage configure --stage prod --stack NAME    # stack outputs -> .chalice/config.json
    python -m infra.stage finish    --stage prod                 # after `chalice deploy` (every time)

`configure` checks that the stack was deployed with the parameters the stage needs (prefix,
function names, admin-token parameter, tracing, queue visibility >= worker timeout) and
writes each function's role ARN (`lambda_functions.<fn>.iam_role_arn`) into the stage.

`finish` turns on ReportBatchItemFailures on the workers' SQS event source mappings: chalice
1.34 creates them without it, and without it Lambda deletes a whole batch whenever the
handler returns, so a run waiting for its retry would be lost. Idempotent; run it after
every `chalice deploy` (chalice may recreate a mapping).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra.package import CONFIG_PATH, FUNCTIONS, REPORT_BATCH_ITEM_FAILURES, PackageError, load_config, stage_of

ROOT = Path(__file__).resolve().parent.parent


def params(stage_name: str, config_path: Path = CONFIG_PATH) -> dict[str, str]:
    return stage_of(load_config(config_path), stage_name).parameters()


def configure(cloudformation: Any, stage_name: str, stack_name: str, config_path: Path = CONFIG_PATH) -> dict[str, str]:
    """Write the stack's role ARNs into the stage; returns {function: role ARN}."""
    config = load_config(config_path)
    stage = stage_of(config, stage_name)
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    deployed = {p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue")) for p in stack.get("Parameters", [])}
    wanted = stage.parameters()
    wrong = []
    for key, value in wanted.items():
        have = deployed.get(key)
        if key == "WorkerVisibilitySeconds":
            if have is None or int(have) < stage.worker_timeout:
                wrong.append(f"{key}={have} (must be >= the workers' timeout, {stage.worker_timeout})")
        elif have != value:
            wrong.append(f"{key}={have!r} (stage {stage_name} needs {value!r})")
    if wrong:
        raise PackageError(
            f"stack {stack_name} does not fit stage {stage_name}: "
            + "; ".join(wrong)
            + f"\nredeploy it with: --parameter-overrides {overrides(wanted)}"
        )
    missing = [f.role_output for f in FUNCTIONS if f.role_output not in outputs]
    if missing:
        raise PackageError(f"stack {stack_name} has no outputs {missing}: deploy the current infra/resources.json")
    st = config["stages"][stage_name]
    st["manage_iam_role"] = False
    # chalice validates a stage-level iam_role_arn even when every function has its own;
    # the smallest role stands there, and `infra.package.check` fails on a function unlisted.
    st["iam_role_arn"] = outputs["TickRoleArn"]
    lambdas = st.setdefault("lambda_functions", {})
    roles = {}
    for fn in FUNCTIONS:
        roles[fn.chalice_name] = outputs[fn.role_output]
        lambdas.setdefault(fn.chalice_name, {})["iam_role_arn"] = outputs[fn.role_output]
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return roles


def finish(lambda_client: Any, stage_name: str, deployed_path: Path | None = None) -> list[str]:
    """Set ReportBatchItemFailures on every SQS event source chalice deployed for the stage."""
    path = deployed_path or ROOT / ".chalice" / "deployed" / f"{stage_name}.json"
    if not path.exists():
        raise PackageError(f"{path} not found: run `chalice deploy --stage {stage_name}` first")
    resources = json.loads(path.read_text()).get("resources", [])
    done = []
    for res in resources:
        if res.get("resource_type") != "sqs_event":
            continue
        uuid = res["event_uuid"]
        current = lambda_client.get_event_source_mapping(UUID=uuid)
        if REPORT_BATCH_ITEM_FAILURES not in (current.get("FunctionResponseTypes") or []):
            lambda_client.update_event_source_mapping(UUID=uuid, FunctionResponseTypes=[REPORT_BATCH_ITEM_FAILURES])
        done.append(
            f"{res.get('name', uuid)}: {REPORT_BATCH_ITEM_FAILURES}, "
            f"MaximumConcurrency={(current.get('ScalingConfig') or {}).get('MaximumConcurrency')}"
        )
    workers = [f for f in FUNCTIONS if f.queue]
    if len(done) != len(workers):
        raise PackageError(f"found {len(done)} SQS event sources in {path}, expected {len(workers)}")
    return done


def compact_template(out: Path) -> int:
    """Write resources.json without whitespace: CloudFormation takes a template body of at most
    51,200 bytes without an S3 bucket, and the indented file is larger. Returns its size."""
    from infra.stack import template

    text = json.dumps(template(), separators=(",", ":"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return len(text.encode())


def overrides(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("template").add_argument("--out", type=Path, default=ROOT / "build" / "resources.json")
    for name in ("params", "configure", "finish"):
        p = sub.add_parser(name)
        p.add_argument("--stage", default="prod")
        if name == "configure":
            p.add_argument("--stack", required=True, help="the infra/ stack, e.g. tasksapi-prod-data")
    args = ap.parse_args(argv)
    try:
        if args.command == "template":
            size = compact_template(args.out)
            print(f"{args.out}: {size} bytes" + (" (over 51,200: deploy it with --s3-bucket)" if size > 51_200 else ""))
            return 0
        if args.command == "params":
            print(overrides(params(args.stage)))
            return 0
        import boto3

        if args.command == "configure":
            roles = configure(boto3.client("cloudformation"), args.stage, args.stack)
            for fn, arn in roles.items():
                print(f"{fn}: {arn}")
            print(f"wrote the role ARNs into {CONFIG_PATH} (stage {args.stage})")
        else:
            for line in finish(boto3.client("lambda"), args.stage):
                print(line)
    except PackageError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
