"""A small CloudFormation intrinsic-function resolver for the subset `resources.json` uses.

Used where something must read the template the way CloudFormation would: the emulator
(`stack.complete_for_emulator` creates what moto's CloudFormation ignores) and the tests
(the packaged IAM policies resolved to concrete ARNs). Supported: Ref (parameters, pseudo
parameters, resources), Fn::GetAtt and Fn::Sub (${X} and ${X.Attr}) for the resource types
used here, Fn::Join, Fn::If / Fn::Equals / Fn::Not / Fn::And / Fn::Or with Conditions, and
AWS::NoValue (dropped from lists and dicts, as CloudFormation does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NO_VALUE = object()
_SUB = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass
class Resolver:
    template: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides of the parameters' defaults
    account: str = "123456789012"
    region: str = "us-east-1"
    partition: str = "aws"
    stack_name: str = "stack"

    def parameter(self, name: str) -> Any:
        if name in self.parameters:
            value = self.parameters[name]
        else:
            spec = self.template.get("Parameters", {}).get(name)
            if spec is None:
                raise KeyError(f"unknown parameter {name}")
            value = spec.get("Default", "")
        spec = self.template.get("Parameters", {}).get(name, {})
        if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
            return value.split(",")
        return value

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    # -- resources -------------------------------------------------------------------------
    def _props(self, logical_id: str) -> dict[str, Any]:
        return dict(self.template["Resources"][logical_id].get("Properties", {}))

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": self.partition,
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        res = self.template["Resources"].get(name)
        if res is None:
            raise KeyError(f"unknown reference {name}")
        props = self._props(name)
        kind = res["Type"]
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{self.account}/{self.resolve(props['QueueName'])}"
        if kind == "AWS::DynamoDB::Table":
            return self.resolve(props["TableName"])
        if kind == "AWS::Logs::LogGroup":
            return self.resolve(props["LogGroupName"])
        return f"{self.stack_name}-{name}"  # physical id CloudFormation would generate

    def get_att(self, name: str, attr: str) -> Any:
        res = self.template["Resources"][name]
        props = self._props(name)
        kind = res["Type"]
        base = f"arn:{self.partition}"
        if kind == "AWS::DynamoDB::Table" and attr == "Arn":
            return f"{base}:dynamodb:{self.region}:{self.account}:table/{self.resolve(props['TableName'])}"
        if kind == "AWS::SQS::Queue" and attr == "Arn":
            return f"{base}:sqs:{self.region}:{self.account}:{self.resolve(props['QueueName'])}"
        if kind == "AWS::SQS::Queue" and attr == "QueueName":
            return self.resolve(props["QueueName"])
        if kind == "AWS::Logs::LogGroup" and attr == "Arn":
            return f"{base}:logs:{self.region}:{self.account}:log-group:{self.resolve(props['LogGroupName'])}:*"
        if kind == "AWS::IAM::Role" and attr == "Arn":
            return f"{base}:iam::{self.account}:role/{self.stack_name}-{name}"
        if kind == "AWS::KMS::Key" and attr == "Arn":
            return f"{base}:kms:{self.region}:{self.account}:key/{self.ref(name)}"
        raise KeyError(f"Fn::GetAtt {name}.{attr} ({kind}) is not modelled")

    # -- intrinsic functions ---------------------------------------------------------------
    def _sub(self, text: str, local: dict[str, Any]) -> str:
        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            if key in local:
                return str(local[key])
            if "." in key and not key.startswith("AWS::"):
                res, attr = key.split(".", 1)
                return str(self.get_att(res, attr))
            return str(self.ref(key))

        return _SUB.sub(one, text)

    def resolve(self, value: Any) -> Any:
        out = self._resolve(value)
        return None if out is _NO_VALUE else out

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                res, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(res, attr)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    text, local = arg[0], {k: self._resolve(v) for k, v in arg[1].items()}
                    return self._sub(text, local)
                return self._sub(arg, {})
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(i) for i in self._resolve(items))
            if key == "Fn::If":
                cond, yes, no = arg
                return self._resolve(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                a, b = (self._resolve(x) for x in arg)
                return a == b
            if key == "Fn::Not":
                return not self._resolve(arg[0])
            if key == "Fn::And":
                return all(self._resolve(x) for x in arg)
            if key == "Fn::Or":
                return any(self._resolve(x) for x in arg)
            if key == "Condition":
                return self.condition(arg)
        out = {}
        for k, v in value.items():
            r = self._resolve(v)
            if r is not _NO_VALUE:
                out[k] = r
        return out
