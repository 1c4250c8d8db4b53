"""`make package`: one CloudFormation (SAM) template + deployment zip for a stage.

    python -m infra.package [--stage prod] [--out build]

Runs `chalice package --merge-template` with `resources.json` (tables, queues, DLQs,
log groups, the per-function roles, alarms) merged into chalice's template, plus the few
overrides that wire chalice's functions to those resources. Chalice's merge is deep:
dicts merge key by key, anything else (lists, strings) is replaced. So the overrides only
add keys to chalice's resources or replace plain strings (FunctionName, Role, Tracing,
DependsOn, the SQS event's FunctionResponseTypes) and never merge an intrinsic into another
(chalice's queue `Fn::Sub` ARN stays; merging a `Fn::GetAtt` into it would leave both keys:
invalid). `check` then verifies the result.

Output: <out>/<stage>/sam.json, deployment.zip (plus compiled bytecode, see `add_bytecode`)
and merge.json (what was merged, to read).
Chalice runs on a staging copy of the project (`<out>/.staging/<stage>`) whose config
points every function at its role from the merged template, so the project's own
`.chalice/config.json` (whose role ARNs `python -m infra.stage configure` fills in for the
`chalice deploy` path) is never touched. Needs the package registry only (chalice
downloads Lambda-platform wheels on the first run and caches them in
`.chalice/deployments/`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import posixpath
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.stack import template as infra_template

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / ".chalice" / "config.json"
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/replaced-by-the-merge-template"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


@dataclass(frozen=True)
class Function:
    """A chalice function and the infra/ resources it uses."""

    chalice_name: str  # the name in app.py and in config.json's lambda_functions
    logical_id: str  # its resource in chalice's SAM template
    role: str  # its execution role in resources.json
    logs: str  # its log group in resources.json
    suffix: str  # deployed name = <app>-<stage><suffix>
    queue: str | None = None  # the run queue it consumes (workers)

    @property
    def role_output(self) -> str:
        return f"{self.role}Arn"


FUNCTIONS: tuple[Function, ...] = (
    Function("api_handler", "APIHandler", "ApiRole", "ApiLogs", ""),
    Function("tick", "Tick", "TickRole", "TickLogs", "-tick"),
    Function("worker_high", "WorkerHigh", "WorkerHighRole", "WorkerHighLogs", "-worker_high", "RunsHighQueue"),
    Function(
        "worker_normal", "WorkerNormal", "WorkerNormalRole", "WorkerNormalLogs", "-worker_normal", "RunsNormalQueue"
    ),
    Function("worker_low", "WorkerLow", "WorkerLowRole", "WorkerLowLogs", "-worker_low", "RunsLowQueue"),
    # AWS events in: invoked only by the optional rule of infra/awsevents.json (docs/deploy.md).
    Function("aws_events", "AwsEvents", "AwsEventsRole", "AwsEventsLogs", "-aws_events"),
)


class PackageError(RuntimeError):
    pass


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class Stage:
    """What a chalice stage's config says that the infra/ parameters must agree with."""

    name: str
    app_name: str
    prefix: str
    admin_token_param: str
    xray: bool
    worker_timeout: int

    @property
    def function_prefix(self) -> str:
        return f"{self.app_name}-{self.name}"

    def parameters(self) -> dict[str, str]:
        """The infra/ stack parameters this stage needs (for `aws cloudformation deploy`)."""
        return {
            "Prefix": self.prefix,
            "FunctionPrefix": self.function_prefix,
            "AdminTokenParameter": self.admin_token_param,
            "Tracing": "Active" if self.xray else "PassThrough",
            "WorkerVisibilitySeconds": str(max(300, self.worker_timeout)),
        }


def stage_of(config: dict[str, Any], name: str) -> Stage:
    stages = config.get("stages", {})
    if name not in stages:
        raise PackageError(f"no stage {name!r} in .chalice/config.json (have: {', '.join(stages)})")
    st = stages[name]
    env = {**config.get("environment_variables", {}), **st.get("environment_variables", {})}
    missing = [k for k in ("TASKAPI_PREFIX", "TASKAPI_ADMIN_TOKEN_PARAM") if not env.get(k)]
    if missing:
        raise PackageError(f"stage {name!r} does not set {', '.join(missing)}: it is not a deployable stage")

    def lookup(fn: str, key: str, default: Any) -> Any:
        for scope in (
            st.get("lambda_functions", {}).get(fn, {}),
            st,
            config.get("lambda_functions", {}).get(fn, {}),
            config,
        ):
            if scope.get(key) is not None:
                return scope[key]
        return default

    workers = [f.chalice_name for f in FUNCTIONS if f.queue]
    return Stage(
        name=name,
        app_name=config["app_name"],
        prefix=env["TASKAPI_PREFIX"],
        admin_token_param=env["TASKAPI_ADMIN_TOKEN_PARAM"],
        xray=bool(st.get("xray", config.get("xray", False))),
        worker_timeout=max(int(lookup(w, "lambda_timeout", 60)) for w in workers),
    )


def merge_template(stage: Stage) -> dict[str, Any]:
    """resources.json with its parameters pinned to the stage, plus the overrides that wire
    chalice's functions to the resources."""
    tpl = copy.deepcopy(infra_template())
    params = tpl["Parameters"]
    # Values chalice bakes into its own resources (env vars, queue ARNs of the event sources,
    # function names) cannot follow a parameter: pin them so the template stays consistent.
    for key, value in stage.parameters().items():
        params[key]["Default"] = value if params[key]["Type"] != "Number" else int(value)
    for key in ("Prefix", "FunctionPrefix", "AdminTokenParameter"):
        params[key]["AllowedValues"] = [params[key]["Default"]]
    params["WorkerVisibilitySeconds"]["MinValue"] = stage.worker_timeout  # Lambda refuses timeout > visibility

    for fn in FUNCTIONS:
        override: dict[str, Any] = {
            "DependsOn": [fn.logs] + ([fn.queue] if fn.queue else []),
            "Properties": {
                "FunctionName": {"Fn::Sub": "${FunctionPrefix}" + fn.suffix},
                "Role": {"Fn::GetAtt": [fn.role, "Arn"]},
                "Tracing": {"Ref": "Tracing"},
            },
        }
        if fn.queue:
            override["Properties"]["Events"] = {
                f"{fn.logical_id}SqsEventSource": {
                    "Properties": {"FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES]}
                }
            }
        if fn.logical_id in tpl["Resources"]:
            raise PackageError(f"infra/resources.json defines {fn.logical_id}, a name chalice uses")
        tpl["Resources"][fn.logical_id] = override
    return tpl


def _staging_config(config: dict[str, Any], stage: Stage) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    st = cfg["stages"][stage.name]
    st["manage_iam_role"] = False
    st["iam_role_arn"] = PLACEHOLDER_ROLE
    lambdas = st.setdefault("lambda_functions", {})
    for fn in FUNCTIONS:
        lambdas.setdefault(fn.chalice_name, {})["iam_role_arn"] = PLACEHOLDER_ROLE
    return cfg


def _stage_project(stage: Stage, staging: Path, config: dict[str, Any]) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    (staging / ".chalice").mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(ROOT / name, staging / name)
    shutil.copytree(ROOT / "chalicelib", staging / "chalicelib", ignore=ignore)
    if (ROOT / "vendor").is_dir():
        shutil.copytree(ROOT / "vendor", staging / "vendor", ignore=ignore)
    (staging / ".chalice" / "config.json").write_text(json.dumps(_staging_config(config, stage), indent=2))
    cache = ROOT / ".chalice" / "deployments"  # chalice's wheel cache, shared with the project
    cache.mkdir(parents=True, exist_ok=True)
    (staging / ".chalice" / "deployments").symlink_to(cache, target_is_directory=True)


def _chalice_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKAPI_", "AWS_ENDPOINT_URL", "POWERTOOLS_")) and k not in ("AWS_PROFILE",)
    }
    env.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))
    return env


def _chalice() -> list[str]:
    exe = Path(sys.executable).parent / "chalice"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "chalice.cli"]


def add_bytecode(zip_path: Path, runtime: str) -> int:
    """Add a compiled `__pycache__/*.pyc` next to every module of the zip; returns how many.

    /var/task is read-only, so without them Python compiles every module it imports on every
    cold start (measured: `import app` ~2 s without, ~1 s with). The .pyc are
    unchecked-hash: valid whatever the file times after unzipping. Only when this
    interpreter is the runtime's version (the bytecode format changes between versions).
    """
    if runtime != f"python{sys.version_info.major}.{sys.version_info.minor}":
        print(f"not adding bytecode: packaging with Python {sys.version_info[:2]} for {runtime}", file=sys.stderr)
        return 0
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    tag = sys.implementation.cache_tag
    added = 0
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        names = set(zf.namelist())
        for info in zf.infolist():
            if not info.filename.endswith(".py"):
                continue
            folder, name = posixpath.split(info.filename)
            pyc_name = posixpath.join(folder, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            if pyc_name in names:
                continue
            source = zf.read(info)
            try:
                code = compile(source, info.filename, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                continue  # not importable as Python 3 (templates, py2-only files): left as it is
            pyc = zipfile.ZipInfo(pyc_name, date_time=info.date_time)
            pyc.external_attr = info.external_attr
            pyc.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(pyc, _code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))
            added += 1
    return added


# botocore ships the API model of every AWS service: 17 of a 25 MB zip. The functions make
# clients for these services only (pynamodb: dynamodb; pipeline steps: lambda, sqs, sns, events;
# the admin token: ssm; agents' secrets: kms), so the package keeps the pinned SDK with only their models
# (docs/deploy.md weighs this against the runtime's boto3). A client for another service would
# fail with UnknownServiceError: tests/unit/test_lean.py checks every client the code makes.
SDK_SERVICES = ("dynamodb", "events", "kms", "lambda", "sns", "sqs", "ssm")
SDK_PACKAGES = ("boto3", "botocore", "s3transfer")


def _rewrite_zip(zip_path: Path, keep: Any) -> int:
    """Rewrite the zip with the entries `keep(name)` accepts; returns the bytes saved."""
    before = zip_path.stat().st_size
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if keep(info.filename):
                dst.writestr(info, src.read(info), compress_type=info.compress_type)
    os.replace(tmp, zip_path)
    return before - zip_path.stat().st_size


def trim_sdk(zip_path: Path, services: tuple[str, ...] = SDK_SERVICES) -> int:
    """Drop the botocore service models the functions never load; returns the bytes saved."""

    def keep(name: str) -> bool:
        parts = name.split("/")
        return not (len(parts) > 3 and parts[:2] == ["botocore", "data"] and parts[2] not in services)

    return _rewrite_zip(zip_path, keep)


def strip_sdk(zip_path: Path) -> int:
    """Drop boto3/botocore/s3transfer entirely (the runtime's copy would be used); for measuring."""

    def keep(name: str) -> bool:
        top = name.split("/")[0]
        return top not in SDK_PACKAGES and not top.startswith(tuple(f"{p}-" for p in SDK_PACKAGES))

    return _rewrite_zip(zip_path, keep)


def check(sam: dict[str, Any], stage: Stage) -> None:
    """What must hold of the packaged template; PackageError says what does not."""
    resources = sam["Resources"]
    problems = [
        f"{k}: no Type (an override matched no chalice resource)" for k, v in resources.items() if "Type" not in v
    ]
    functions = {k for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}
    known = {f.logical_id for f in FUNCTIONS}
    if functions - known:
        problems.append(
            f"functions without a role in infra/: {sorted(functions - known)} "
            "(add a role, a log group and an entry in infra/package.py FUNCTIONS)"
        )
    if known - functions:
        problems.append(f"functions gone from app.py: {sorted(known - functions)}")
    if any(v.get("Type") == "AWS::IAM::Role" and k not in {f.role for f in FUNCTIONS} for k, v in resources.items()):
        problems.append("chalice generated a role of its own: check manage_iam_role in the staging config")
    for fn in FUNCTIONS:
        props = resources.get(fn.logical_id, {}).get("Properties", {})
        if props.get("Role") != {"Fn::GetAtt": [fn.role, "Arn"]}:
            problems.append(f"{fn.logical_id}: Role is {props.get('Role')!r}, not {fn.role}")
        if not fn.queue:
            continue
        events = [e for e in props.get("Events", {}).values() if e.get("Type") == "SQS"]
        if len(events) != 1:
            problems.append(f"{fn.logical_id}: {len(events)} SQS event sources, expected 1")
            continue
        ev = events[0]["Properties"]
        queue_name = stage.prefix + "runs-" + fn.chalice_name.removeprefix("worker_")
        if set(ev.get("Queue", {})) != {"Fn::Sub"} or not str(ev["Queue"]["Fn::Sub"]).endswith(":" + queue_name):
            problems.append(f"{fn.logical_id}: event source queue {ev.get('Queue')!r} is not {queue_name}")
        if ev.get("FunctionResponseTypes") != [REPORT_BATCH_ITEM_FAILURES]:
            problems.append(f"{fn.logical_id}: FunctionResponseTypes is {ev.get('FunctionResponseTypes')!r}")
        if not ev.get("ScalingConfig", {}).get("MaximumConcurrency"):
            problems.append(
                f"{fn.logical_id}: no ScalingConfig.MaximumConcurrency (set maximum_concurrency= in app.py)"
            )
        if int(props.get("Timeout", 3)) > stage.worker_timeout:
            problems.append(
                f"{fn.logical_id}: Timeout {props.get('Timeout')} > queue visibility {stage.worker_timeout}"
            )
    if problems:
        raise PackageError("the packaged template is not right:\n  " + "\n  ".join(problems))


def package(
    stage_name: str = "prod",
    out: Path | None = None,
    config_path: Path = CONFIG_PATH,
    bytecode: bool = True,
    trim: bool = True,
) -> Path:
    """Build <out>/<stage>/{sam.json,deployment.zip,merge.json}; returns that directory.
    `trim`: keep only the SDK service models the functions use (see SDK_SERVICES)."""
    out = (out or ROOT / "build").resolve()
    config = load_config(config_path)
    stage = stage_of(config, stage_name)
    target = out / stage_name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("sam.json", "deployment.zip"):
        (target / name).unlink(missing_ok=True)
    merge_path = target / "merge.json"
    merge_path.write_text(json.dumps(merge_template(stage), indent=2) + "\n")
    staging = out / ".staging" / stage_name
    _stage_project(stage, staging, config)
    cmd = [
        *_chalice(),
        "--project-dir",
        str(staging),
        "package",
        "--stage",
        stage_name,
        "--merge-template",
        str(merge_path),
        str(target),
    ]
    proc = subprocess.run(cmd, env=_chalice_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (target / "sam.json").exists():
        raise PackageError(f"chalice package failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    sam = json.loads((target / "sam.json").read_text())
    check(sam, stage)
    if trim:
        trim_sdk(target / "deployment.zip")
    if bytecode:
        add_bytecode(target / "deployment.zip", sam["Resources"][FUNCTIONS[0].logical_id]["Properties"]["Runtime"])
    return target


def summary(target: Path) -> str:
    sam = json.loads((target / "sam.json").read_text())
    kinds: dict[str, int] = {}
    for res in sam["Resources"].values():
        kinds[res["Type"]] = kinds.get(res["Type"], 0) + 1
    zip_mb = (target / "deployment.zip").stat().st_size / 1e6
    lines = [
        f"{target / 'sam.json'}: {len(sam['Resources'])} resources",
        *(f"  {n:>3} {k}" for k, n in sorted(kinds.items())),
        f"{target / 'deployment.zip'}: {zip_mb:.1f} MB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="prod")
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--no-bytecode", action="store_true", help="ship sources only (chalice's zip as it is)")
    args = ap.parse_args(argv)
    try:
        target = package(args.stage, args.out, bytecode=not args.no_bytecode)
    except PackageError as e:
        print(e, file=sys.stderr)
        return 1
    print(summary(target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
