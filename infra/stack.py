"""Create the resources of `resources.json` through CloudFormation.

Locally the template is deployed into moto's CloudFormation, so a resource that
exists on the local stack is one that exists when deployed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

TEMPLATE_PATH = Path(__file__).with_name("resources.json")


def template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text())


def deploy(cloudformation: Any, prefix: str, stack_name: str | None = None) -> dict[str, str]:
    """Create (or keep) the data stack and return its outputs."""
    name = stack_name or f"{prefix.rstrip('-')}-data"
    try:
        existing = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except Exception:  # noqa: BLE001 - "does not exist" is a ClientError; any other error surfaces on create
        existing = []
    if not existing or existing[0]["StackStatus"] in ("DELETE_COMPLETE", "ROLLBACK_COMPLETE"):
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(template(), separators=(",", ":")),
            Parameters=[{"ParameterKey": "Prefix", "ParameterValue": prefix}],
        )
    for _ in range(600):
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if stack["StackStatus"].endswith("_COMPLETE") or stack["StackStatus"].endswith("_FAILED"):
            break
        time.sleep(0.1)
    if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise RuntimeError(f"stack {name} ended in {stack['StackStatus']}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


_ALARM_KEYS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "Metrics",
)


def complete_for_emulator(dynamodb: Any, cloudwatch: Any, prefix: str) -> None:
    """Apply the parts of the template that moto's CloudFormation ignores (TTL, alarms),
    read from the same template, so the emulated stack matches the deployed one."""
    from infra.cfn import Resolver

    tpl = template()
    resolver = Resolver(tpl, {"Prefix": prefix})
    for res in tpl["Resources"].values():
        if res["Type"] == "AWS::DynamoDB::Table" and "TimeToLiveSpecification" in res["Properties"]:
            props = resolver.resolve(res["Properties"])
            dynamodb.update_time_to_live(
                TableName=props["TableName"],
                TimeToLiveSpecification=props["TimeToLiveSpecification"],
            )
        elif res["Type"] == "AWS::CloudWatch::Alarm":
            props = resolver.resolve(res["Properties"])
            kwargs = {k: props[k] for k in _ALARM_KEYS if k in props}
            kwargs["Threshold"] = float(kwargs["Threshold"])
            cloudwatch.put_metric_alarm(**kwargs)
