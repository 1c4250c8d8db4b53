"""The deploy side: the packaged template (`make package`) lints, wires chalice's functions
to the infra/ resources, gives each function only what it uses, and contains infra/ as it is;
the `chalice deploy` path's stage wiring works against a stack deployed from infra/.

`chalice package` runs once per session (~15 s; the first run on a machine downloads the
Lambda-platform wheels from the package registry into .chalice/deployments/).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest

from chalicelib.execution import worker
from chalicelib.platform.config import PRIORITY_BANDS, Settings, settings
from chalicelib.services import awsevents
from infra import stack
from infra.cfn import Resolver
from infra.package import FUNCTIONS, PLACEHOLDER_ROLE, load_config, package, stage_of
from tests.integration.conftest import ADMIN, task_body
from tests.integration.harness import clock, queue_url, tick, workers  # noqa: F401

STAGE = "prod"
ACCOUNT, REGION = "123456789012", "us-east-1"
# Actions that take no resource ARN (IAM only accepts "*" for them).
RESOURCELESS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
TARGET_ACTIONS = {"lambda:InvokeFunction", "sns:Publish", "events:PutEvents"}


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    target = package(STAGE, tmp_path_factory.mktemp("package"))
    return target, json.loads((target / "sam.json").read_text())


@pytest.fixture(scope="session")
def sam(packaged: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return packaged[1]


def _listify(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _policies(tpl: dict[str, Any], **parameters: Any) -> dict[str, list[dict[str, Any]]]:
    """{chalice function name: resolved policy statements of its role}."""
    r = Resolver(tpl, parameters, account=ACCOUNT, region=REGION)
    out = {}
    for fn in FUNCTIONS:
        role = tpl["Resources"][fn.role]["Properties"]
        out[fn.chalice_name] = [s for p in r.resolve(role["Policies"]) for s in p["PolicyDocument"]["Statement"]]
    return out


def _allowed(statements: list[dict[str, Any]], action: str, arn: str) -> bool:
    return any(
        s["Effect"] == "Allow"
        and any(fnmatchcase(action.lower(), a.lower()) for a in _listify(s["Action"]))
        and any(fnmatchcase(arn, r) for r in _listify(s["Resource"]))
        for s in statements
    )


# ---- the package ---------------------------------------------------------------------------


def test_cfn_lint_passes_on_the_packaged_template_and_on_infra(packaged: tuple[Path, dict[str, Any]]) -> None:
    target, _ = packaged
    exe = Path(sys.executable).parent / "cfn-lint"
    proc = subprocess.run(
        [str(exe), str(target / "sam.json"), str(stack.TEMPLATE_PATH)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"cfn-lint:\n{proc.stdout}{proc.stderr}"


def test_the_zip_imports_with_what_it_ships_and_carries_bytecode(
    packaged: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import os
    import zipfile

    target, sam = packaged
    with zipfile.ZipFile(target / "deployment.zip") as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    tag = sys.implementation.cache_tag
    assert {
        "app.py",
        "chalicelib/execution/worker.py",
        f"chalicelib/execution/__pycache__/worker.{tag}.pyc",
        "pynamodb/models.py",
    } <= names
    assert PLACEHOLDER_ROLE not in json.dumps(sam)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKAPI_", "PYTHON"))}
    env.update(sam["Resources"]["Tick"]["Properties"]["Environment"]["Variables"], PYTHONDONTWRITEBYTECODE="1")
    probe = "import app, chalicelib.execution.worker as w; print(w.__cached__)"
    proc = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # -S: only the stdlib and what the zip ships
    assert (tmp_path / proc.stdout.strip()).is_file(), "the shipped bytecode is where the import looks for it"


def test_functions_are_wired_to_their_infra_resources(sam: dict[str, Any]) -> None:
    res = sam["Resources"]
    stage = stage_of(load_config(), STAGE)
    functions = {k for k, v in res.items() if v["Type"] == "AWS::Serverless::Function"}
    assert functions == {f.logical_id for f in FUNCTIONS}
    roles = [res[f.logical_id]["Properties"]["Role"]["Fn::GetAtt"][0] for f in FUNCTIONS]
    assert len(set(roles)) == len(FUNCTIONS), "one role per function"
    assert not [k for k, v in res.items() if v["Type"] == "AWS::IAM::Role" and k not in roles]
    for fn in FUNCTIONS:
        props = res[fn.logical_id]["Properties"]
        assert props["Tracing"] == {"Ref": "Tracing"}
        assert fn.logs in res[fn.logical_id]["DependsOn"]
        assert props["FunctionName"] == {"Fn::Sub": "${FunctionPrefix}" + fn.suffix}
    assert sam["Parameters"]["Tracing"]["Default"] == ("Active" if stage.xray else "PassThrough")
    tick_events = res["Tick"]["Properties"]["Events"]
    assert [e["Properties"]["Schedule"] for e in tick_events.values() if e["Type"] == "Schedule"] == ["rate(1 minute)"]


def test_every_sqs_event_source_reports_batch_failures_with_a_concurrency_cap(sam: dict[str, Any]) -> None:
    res, params = sam["Resources"], sam["Parameters"]
    r = Resolver(sam, account=ACCOUNT, region=REGION)
    sources = 0
    for name, fn in res.items():
        for event in fn.get("Properties", {}).get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            sources += 1
            ev = event["Properties"]
            assert ev["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
            assert ev["ScalingConfig"]["MaximumConcurrency"] >= 2, name
            queue = next(q for q in fn["DependsOn"] if res.get(q, {}).get("Type") == "AWS::SQS::Queue")
            assert r.resolve(ev["Queue"]) == r.get_att(queue, "Arn"), f"{name} consumes the queue it depends on"
            assert (
                fn["Properties"]["Timeout"]
                <= params["WorkerVisibilitySeconds"]["MinValue"]
                <= params["WorkerVisibilitySeconds"]["Default"]
            ), f"{name}: Lambda refuses timeout > visibility"
            dlq = res[queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert res[dlq]["Type"] == "AWS::SQS::Queue"
    assert sources == len(PRIORITY_BANDS)


# ---- least privilege -----------------------------------------------------------------------


def test_no_wildcard_action_or_resource_where_an_arn_is_possible(sam: dict[str, Any]) -> None:
    for fn, statements in _policies(sam).items():
        for s in statements:
            actions, resources = _listify(s["Action"]), _listify(s["Resource"])
            assert s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s
            for a in actions:
                assert "*" not in a, f"{fn}: wildcard action {a}"
            if set(actions) <= RESOURCELESS:
                assert resources == ["*"]
                continue
            for arn in resources:
                assert arn.startswith("arn:aws:") and f":{REGION}:{ACCOUNT}:" in arn, f"{fn}: {arn}"
                # The only wildcard: the log streams of the function's own log group.
                assert "*" not in arn.removesuffix(":*") and ("*" not in arn or ":log-group:/aws/lambda/" in arn), (
                    f"{fn}: {s.get('Sid')} {arn}"
                )


def test_each_function_gets_only_its_own_queue_log_group_and_secret(sam: dict[str, Any]) -> None:
    stage = stage_of(load_config(), STAGE)
    policies = _policies(sam)
    param_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{stage.admin_token_param}"
    signing_key = Resolver(sam, account=ACCOUNT, region=REGION).get_att("SigningKey", "Arn")
    for fn in FUNCTIONS:
        statements = policies[fn.chalice_name]
        name = stage.function_prefix + fn.suffix
        logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*"
        assert _allowed(statements, "logs:PutLogEvents", logs)
        assert not _allowed(statements, "logs:CreateLogGroup", logs), "the log group comes from infra/"
        assert _allowed(statements, "ssm:GetParameter", param_arn) == (fn.chalice_name == "api_handler")
        # Signing secrets: the API only seals them, only the workers (which sign) open them.
        assert _allowed(statements, "kms:Encrypt", signing_key) == (fn.chalice_name == "api_handler")
        assert _allowed(statements, "kms:Decrypt", signing_key) == (fn.queue is not None)
        for band in PRIORITY_BANDS:
            q = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{stage.prefix}runs-{band}"
            own = fn.chalice_name == f"worker_{band}"
            assert _allowed(statements, "sqs:ReceiveMessage", q) == own
            assert _allowed(statements, "sqs:SendMessage", q), "everyone dispatches (API, tick, emit steps)"
            assert _allowed(statements, "sqs:SendMessage", q + "-dlq") == own
            # the tick's dead-letter sweep (deadletters.py) alone reads and deletes the DLQs
            assert _allowed(statements, "sqs:ReceiveMessage", q + "-dlq") == (fn.chalice_name == "tick")
            assert _allowed(statements, "sqs:DeleteMessage", q + "-dlq") == (fn.chalice_name == "tick")
        assert _allowed(statements, "xray:PutTraceSegments", "*") == stage.xray
        assert not _allowed(
            statements, "dynamodb:Scan", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{stage.prefix}tasks"
        )
    # The tick scans one table only: the stuck-run sweep's bounded page of the runs table.
    scans = [s for s in policies["tick"] if any("Scan" in a for a in _listify(s["Action"]))]
    assert [s["Resource"] for s in scans] == [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{stage.prefix}runs"], scans


def test_pipeline_targets_are_denied_by_default_and_allowed_by_parameter(sam: dict[str, Any]) -> None:
    fn_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:agent-report"
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:agent-news"
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:agent-inbox"
    for fn, statements in _policies(sam).items():
        assert not any(a in TARGET_ACTIONS for s in statements for a in _listify(s["Action"])), fn
        assert not _allowed(statements, "sqs:SendMessage", queue)
    allowed = _policies(
        sam,
        WorkerLambdaTargets=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:agent-*",
        WorkerTopicTargets=topic,
        WorkerEventBusTargets=bus,
        WorkerQueueTargets=queue,
    )
    for fn in FUNCTIONS:
        statements = allowed[fn.chalice_name]
        is_worker = fn.queue is not None
        assert _allowed(statements, "lambda:InvokeFunction", fn_arn) == is_worker
        assert not _allowed(statements, "lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:other")
        assert _allowed(statements, "sns:Publish", topic) == is_worker
        assert _allowed(statements, "events:PutEvents", bus) == is_worker
        assert _allowed(statements, "sqs:SendMessage", queue) == is_worker


class _Calls:
    """Every AWS call the app makes, attributed to the function that made it."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, str, str]] = set()
        self.worker: str | None = None  # the worker handler running now (it may fan records out to threads)

    def _function(self) -> str | None:
        f = sys._getframe(3)
        while f is not None:
            code = f.f_code
            if code.co_filename.endswith("chalicelib/execution/worker.py") and self.worker:
                return self.worker
            if code.co_filename.endswith("chalicelib/dispatch/tick.py") and code.co_name in ("run_tick", "tick_shard"):
                return "tick"
            if code.co_filename.endswith("chalicelib/http/api.py") and code.co_name == "handler":
                return "api_handler"
            if code.co_filename.endswith("chalicelib/services/awsevents.py") and code.co_name == "handle":
                return "aws_events"
            f = f.f_back
        return None

    def record(self, service: str, op: str, params: dict[str, Any]) -> None:
        fn = self._function()
        if fn is None:
            return
        arn = f"arn:aws:{service}:{REGION}:{ACCOUNT}:"
        if service == "dynamodb":
            tables = list(params.get("RequestItems", {})) or [params["TableName"]]
            for t in tables:
                index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
                self.seen.add((fn, f"dynamodb:{op}", f"{arn}table/{t}{index}", op))
        elif service == "sqs":
            action = op.removesuffix("Batch")
            name = (params.get("QueueUrl") or params.get("QueueName", "")).rstrip("/").rsplit("/", 1)[-1]
            self.seen.add((fn, f"sqs:{action}", arn + name, op))
        elif service == "ssm":
            self.seen.add((fn, f"ssm:{op}", f"{arn}parameter/{params['Name'].lstrip('/')}", op))
        elif service == "kms":  # by alias: mapped to its key's ARN (what IAM checks) by the test
            self.seen.add((fn, f"kms:{op}", arn + params["KeyId"], op))
        else:
            self.seen.add((fn, f"{service}:{op}", "?", op))


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Calls]:
    rec = _Calls()
    original = botocore.client.BaseClient._make_api_call

    def spy(client: Any, op: str, params: dict[str, Any]) -> Any:
        rec.record(client.meta.service_model.service_name, op, params)
        return original(client, op, params)

    def handle_batch(event: dict[str, Any]) -> Any:
        queue = event["Records"][0]["eventSourceARN"].rsplit(":", 1)[-1]
        rec.worker = "worker_" + queue.removeprefix(settings().prefix + "runs-")
        try:
            return original_handle_batch(event)
        finally:
            rec.worker = None

    original_handle_batch = worker.handle_batch
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    monkeypatch.setattr(worker, "handle_batch", handle_batch)
    yield rec


def test_the_packaged_policies_allow_every_call_the_functions_make(sam, api, clock, workers, calls):  # noqa: F811
    """Drive the routes, the tick and the workers in-process and check each AWS call against
    the resolved policy of the function that made it (as deployed with this stage's prefix)."""
    agent = api.agent("iam")
    token = agent["token"]
    steps = {
        "steps": [
            {"id": "e", "type": "emit", "name": "iam.next", "data": {}},
            {"id": "l", "type": "log", "message": "hi"},
            # Any HTTP step makes the worker open the agent's signing secret (this one is refused).
            {"id": "h", "type": "http", "url": "http://127.0.0.1:9/", "continue_on_error": True},
        ]
    }
    follow = api.call(
        "POST", "/tasks", task_body(agent["agent_id"], schedule_kind="event", schedule_expr="iam.*"), token=token
    )
    assert follow.status_code == 201, follow.body
    soon = api.call(
        "POST",
        "/tasks",
        task_body(agent["agent_id"], schedule_kind="once", payload=steps, schedule_expr="2027-03-01T12:00:30Z"),
        token=token,
        headers={"Idempotency-Key": "iam-1"},
    )  # dispatched on write
    cron = api.call("POST", "/tasks", task_body(agent["agent_id"]), token=token)  # dispatched by the tick
    assert soon.status_code == 201 and cron.status_code == 201, (soon.body, cron.body)
    tid, cid = soon.data["id"], cron.data["id"]
    for method, path, body in (
        ("GET", "/tasks", None),
        ("GET", f"/tasks/{tid}", None),
        ("POST", f"/tasks/{tid}/run_now", {}),
        ("POST", "/events", {"name": "iam.go"}),
        ("GET", f"/tasks/{tid}/runs", None),
        ("POST", f"/tasks/{cid}/pause", None),
        ("POST", f"/tasks/{cid}/resume", None),
        ("PUT", f"/tasks/{cid}", {"title": "x"}),
    ):
        r = api.call(method, path, body, token=token)
        assert r.status_code < 300, (method, path, r.body)
    assert api.call("GET", "/agents", headers=ADMIN).status_code == 200
    clock.advance(60)
    workers.drain()
    clock.advance(24 * 3600)
    assert tick(clock).dispatched >= 1
    clock.advance(900)
    boto3.client("sqs").send_message(QueueUrl=queue_url("normal"), MessageBody="not a run message")
    workers.drain()
    assert api.call("POST", f"/tasks/{cid}/cancel", token=token).status_code == 200
    on_aws = task_body(agent["agent_id"], schedule_kind="event", schedule_expr="aws.*")
    assert api.call("POST", "/tasks", on_aws, token=token).status_code == 201
    aws_event = {"id": "e-1", "source": "aws.s3", "detail-type": "iam go", "detail": {}}
    assert awsevents.handle({"agent_id": agent["agent_id"], "event": aws_event}, clock.now)["runs"]
    assert api.call("POST", f"/agents/{agent['agent_id']}/revoke", headers=ADMIN).status_code == 200

    policies = _policies(sam, Prefix=settings().prefix)
    r = Resolver(sam, {"Prefix": settings().prefix}, account=ACCOUNT, region=REGION)
    keys = {  # a KMS alias's ARN → its key's ARN
        f"arn:aws:kms:{REGION}:{ACCOUNT}:{r.resolve(res['Properties']['AliasName'])}": r.get_att(
            res["Properties"]["TargetKeyId"]["Ref"], "Arn"
        )
        for res in sam["Resources"].values()
        if res["Type"] == "AWS::KMS::Alias"
    }
    seen = {(fn, action, keys.get(arn, arn), op) for fn, action, arn, op in calls.seen}
    assert {("api_handler", "kms:Encrypt"), ("worker_normal", "kms:Decrypt")} <= {c[:2] for c in seen}, seen
    functions = {fn for fn, *_ in seen}
    assert {"api_handler", "tick", "aws_events"} <= functions and any(f.startswith("worker_") for f in functions), (
        functions
    )
    denied = sorted(c for c in seen if not _allowed(policies[c[0]], c[1], c[2]))
    assert not denied, "calls the packaged IAM policies would deny:\n" + "\n".join(map(str, denied))


# ---- infra equivalence ---------------------------------------------------------------------


def test_every_infra_resource_is_in_the_package_unchanged(sam: dict[str, Any]) -> None:
    infra = stack.template()
    for name, res in infra["Resources"].items():
        assert sam["Resources"].get(name) == res, f"{name} differs in the packaged template"
    for section in ("Conditions", "Outputs"):
        for name, value in infra.get(section, {}).items():
            assert sam[section].get(name) == value, f"{section}.{name}"
    for name, spec in infra["Parameters"].items():
        assert sam["Parameters"][name]["Type"] == spec["Type"], name


def _app_names(prefix: str) -> tuple[set[str], set[str]]:
    """The tables (from the PynamoDB models) and queues (from the settings) the app uses, for a prefix."""
    from pynamodb.models import Model

    from chalicelib.store import models

    current = settings().prefix
    s = Settings(prefix=prefix)
    tables = {
        s.table(m.Meta.table_name.removeprefix(current))
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, Model) and m is not Model
    }
    queues = {s.queue_name(b) + sfx for b in PRIORITY_BANDS for sfx in ("", "-dlq")}
    return tables, queues


def _template_names(tpl: dict[str, Any], prefix: str) -> tuple[dict[str, dict[str, Any]], set[str]]:
    r = Resolver(tpl, {"Prefix": prefix})
    res = tpl["Resources"].values()
    tables = {
        r.resolve(v["Properties"]["TableName"]): v["Properties"] for v in res if v["Type"] == "AWS::DynamoDB::Table"
    }
    queues = {r.resolve(v["Properties"]["QueueName"]) for v in res if v["Type"] == "AWS::SQS::Queue"}
    return tables, queues


def test_the_app_tables_indexes_ttl_and_queues_exist_in_infra_and_in_the_package(sam: dict[str, Any]) -> None:
    from pynamodb.attributes import TTLAttribute
    from pynamodb.indexes import GlobalSecondaryIndex
    from pynamodb.models import Model

    from chalicelib.store import models

    prefix = stage_of(load_config(), STAGE).prefix
    want_tables, want_queues = _app_names(prefix)
    for tpl in (stack.template(), sam):
        tables, queues = _template_names(tpl, prefix)
        assert want_tables <= set(tables) and want_queues <= queues
    tables, _ = _template_names(sam, prefix)
    for m in vars(models).values():
        if not (isinstance(m, type) and issubclass(m, Model) and m is not Model):
            continue
        props = tables[prefix + m.Meta.table_name.removeprefix(settings().prefix)]
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        assert keys.get("HASH") == m._hash_key_attribute().attr_name, m.__name__
        assert keys.get("RANGE") == getattr(m._range_key_attribute(), "attr_name", None), m.__name__
        gsis = {g["IndexName"]: g for g in props.get("GlobalSecondaryIndexes", [])}
        for idx in (v for v in vars(m).values() if isinstance(v, GlobalSecondaryIndex)):
            schema = idx._get_schema()
            gsi = gsis[schema["index_name"]]
            order = {"HASH": 0, "RANGE": 1}
            assert sorted(gsi["KeySchema"], key=lambda k: order[k["KeyType"]]) == sorted(
                schema["key_schema"], key=lambda k: order[k["KeyType"]]
            ), schema["index_name"]
            assert gsi["Projection"]["ProjectionType"] == schema["projection"]["ProjectionType"], schema["index_name"]
        ttl = [a.attr_name for a in m.get_attributes().values() if isinstance(a, TTLAttribute)]
        if ttl:
            assert props["TimeToLiveSpecification"] == {"AttributeName": ttl[0], "Enabled": True}, m.__name__


def test_the_local_stack_has_the_app_resources(aws: None) -> None:
    """The emulated stack (same deploy as `make run` and the integration tests) holds them by name."""
    tables, queues = _app_names(settings().prefix)
    have_tables = set(boto3.client("dynamodb").list_tables()["TableNames"])
    have_queues = {u.rsplit("/", 1)[-1] for u in boto3.client("sqs").list_queues().get("QueueUrls", [])}
    assert tables <= have_tables and queues <= have_queues


# ---- the `chalice deploy` path -------------------------------------------------------------


def test_stage_configure_hands_the_stack_roles_to_the_stage(aws: None, tmp_path: Path) -> None:
    from infra import stage as stage_cli

    config = tmp_path / "config.json"
    config.write_text(json.dumps(load_config()))
    cfn = boto3.client("cloudformation")
    wanted = stage_cli.params(STAGE, config)
    name = "iam-configure-data"
    cfn.create_stack(
        StackName=name,
        TemplateBody=stack.TEMPLATE_PATH.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in wanted.items()],
    )
    roles = stage_cli.configure(cfn, STAGE, name, config)
    written = json.loads(config.read_text())["stages"][STAGE]
    assert written["manage_iam_role"] is False and written["iam_role_arn"] == roles["tick"]
    for fn in FUNCTIONS:
        assert written["lambda_functions"][fn.chalice_name]["iam_role_arn"] == roles[fn.chalice_name]
        assert roles[fn.chalice_name].startswith("arn:aws:iam::")
    assert len(set(roles.values())) == len(FUNCTIONS)
    with pytest.raises(Exception, match="does not fit stage"):
        stage_cli.configure(cfn, "dev", name, config)


def test_stage_finish_turns_on_batch_item_failures_on_the_deployed_event_sources(tmp_path: Path) -> None:
    from infra import stage as stage_cli

    class FakeLambda:
        def __init__(self) -> None:
            self.mappings = {f"uuid-{b}": {"ScalingConfig": {"MaximumConcurrency": 5}} for b in PRIORITY_BANDS}
            self.mappings["uuid-high"]["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
            self.updates: list[str] = []

        def get_event_source_mapping(self, UUID: str) -> dict[str, Any]:
            return self.mappings[UUID]

        def update_event_source_mapping(self, UUID: str, FunctionResponseTypes: list[str]) -> None:
            self.updates.append(UUID)
            self.mappings[UUID]["FunctionResponseTypes"] = FunctionResponseTypes

    deployed = tmp_path / "prod.json"
    resources = [{"name": "api_handler", "resource_type": "lambda_function"}] + [
        {"name": f"worker_{b}-sqs-event-source", "resource_type": "sqs_event", "event_uuid": f"uuid-{b}"}
        for b in PRIORITY_BANDS
    ]
    deployed.write_text(json.dumps({"schema_version": "2.0", "resources": resources}))
    client = FakeLambda()
    assert len(stage_cli.finish(client, STAGE, deployed)) == len(PRIORITY_BANDS)
    assert sorted(client.updates) == ["uuid-low", "uuid-normal"]  # high already had it
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in client.mappings.values())
    stage_cli.finish(client, STAGE, deployed)
    assert len(client.updates) == 2, "idempotent"
