"""Deployment package and local-stack figures: package size, each function's cold import, and how
long the local stack takes to restart with 10,000 tasks stored.

    python bench/package.py [--stage prod] [--runs 7] [--no-build] [--restart-tasks 10000] [--no-restart | --only-restart]

Builds the package with the full pinned SDK (`infra.package.package(trim=False)`), then derives the
two other SDK choices from it and measures all three (MB = 10^6 bytes):
- package_mb: the zip as `make package` ships it (pinned boto3/botocore, only the service models
  the code calls: `infra.package.trim_sdk`); package_unzipped_mb;
- package_full_sdk_mb: chalice's zip as it is (every service model);
- package_runtime_sdk_mb: without boto3/botocore/s3transfer (the Lambda runtime's copy is used).
Cold imports: median CPU time (the importing process's; on a shared machine its wall time mostly
measures the other processes, so wall times are reported apart, in cold_import_wall_ms), in a
fresh interpreter (`python -S`: only the stdlib and what the
package ships) run from the unzipped package with the stage's environment and no bytecode writes
(/var/task is read-only), of `import app` plus what the function's handler imports on its first
call, with AWS_LAMBDA_FUNCTION_NAME set as Lambda sets it (app.py loads the routes only in the
API function):
- cold_import_ms (the API function), cold_import_tick_ms, cold_import_worker_ms,
  cold_import_aws_events_ms, on the shipped zip (with the .pyc infra/package.py adds);
- cold_import_full_sdk_ms / cold_import_runtime_sdk_ms: the API function on the other two zips
  (the runtime's SDK emulated by a directory after the package on sys.path, as /var/runtime is);
- cold_import_source_only_ms: the API function without the .pyc;
- cold_import_top_ms: the API function's slowest imports (python -X importtime, cumulative ms).
Local stack (`python -m local`, as `make run` starts it):
- local_restart_s: from starting it to /health answering 200, with --restart-tasks tasks (and
  their due entries) stored in its state directory; of which local_restore_s loading them into
  the emulator and local_restart_first_tick_s the first tick (it runs before /health answers);
  local_start_memory_s: the same start with TASKAPI_STATE=memory and nothing stored.
The machine's load shows in the timings: compare figures of one run.
Merges the figures into bench/results.json (reads it, updates these keys, writes it back).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.package import SDK_PACKAGES, load_config, package, strip_sdk, trim_sdk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
# What each function's handler imports on its first call (app.py), after `import app`.
FUNCTIONS = {
    "": (),
    "-tick": ("chalicelib.dispatch.tick", "chalicelib.platform.metrics", "chalicelib.platform.wiring"),
    "-worker_normal": ("chalicelib.execution.worker", "chalicelib.platform.metrics"),
    "-aws_events": ("chalicelib.services.awsevents", "chalicelib.platform.metrics", "chalicelib.platform.wiring"),
}


def _timed_import(modules: tuple[str, ...]) -> str:
    """Prints the import's CPU time and wall time, in ms."""
    extra = "".join(f"; import {m}" for m in modules)
    return (
        f"import time; c, w = time.process_time(), time.perf_counter(); import app{extra}; "
        "print((time.process_time() - c) * 1000, (time.perf_counter() - w) * 1000)"
    )


def _stage_env(stage: str) -> dict[str, str]:
    config = load_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKAPI_", "PYTHON"))}
    env.update(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    env.update(
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        AWS_REGION="us-east-1",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    return env


def _import_ms(runs_of: list[tuple[Path, dict[str, str], tuple[str, ...]]], runs: int) -> list[tuple[float, float]]:
    """Median cold import (CPU ms, wall ms) per (directory, environment, handler modules); they
    take turns, so the machine's load falls on all of them alike."""
    times: list[list[tuple[float, float]]] = [[] for _ in runs_of]
    for _ in range(runs):
        for i, (code_dir, env, modules) in enumerate(runs_of):
            # -S: no site-packages, so only what the package ships (and the stdlib) is importable.
            cmd = [sys.executable, "-S", "-c", _timed_import(modules)]
            env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
            out = subprocess.run(cmd, cwd=code_dir, env=env, check=True, capture_output=True, text=True)
            cpu, wall = out.stdout.strip().splitlines()[-1].split()
            times[i].append((float(cpu), float(wall)))
    return [(round(statistics.median(c for c, _ in t), 1), round(statistics.median(w for _, w in t), 1)) for t in times]


def _function_env(env: dict[str, str], stage: str, suffix: str) -> dict[str, str]:
    return {**env, "AWS_LAMBDA_FUNCTION_NAME": f"{load_config()['app_name']}-{stage}{suffix}"}


def _runtime_sdk(into: Path) -> Path:
    """A stand-in for the runtime's /var/runtime: this environment's boto3, botocore, s3transfer."""
    import boto3

    site = Path(boto3.__file__).resolve().parent.parent
    for name in SDK_PACKAGES:
        shutil.copytree(site / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into)], check=True)
    return into


def _top_imports(code_dir: Path, env: dict[str, str], n: int = 6) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", "import app"],
        cwd=code_dir,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
        capture_output=True,
        text=True,
    )
    children: dict[str, float] = {}
    for line in out.stderr.splitlines():  # a module's imports are listed before it, one level deeper
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].startswith("import time:") or "cumulative" in parts[1]:
            continue
        name = parts[2].rstrip()
        depth, ms = (len(name) - len(name.lstrip(" ")) - 1) // 2, round(int(parts[1]) / 1000, 1)
        if depth == 1:
            children[name.strip()] = ms
        elif depth == 0:
            if name.strip() == "app":
                top = dict(sorted(children.items(), key=lambda kv: -kv[1])[:n])
                return {"app (with -X importtime)": ms, **top}
            children = {}
    return {}


def measure(full_zip: Path, stage: str, runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        zips = {}
        for variant, change in (("full", None), ("shipped", trim_sdk), ("runtime", strip_sdk)):
            zips[variant] = tmp / f"{variant}.zip"
            shutil.copy(full_zip, zips[variant])
            if change is not None:
                change(zips[variant])
        dirs = {}
        for variant, path in zips.items():
            dirs[variant] = tmp / variant
            with zipfile.ZipFile(path) as zf:
                zf.extractall(dirs[variant])
        with zipfile.ZipFile(zips["shipped"]) as zf:
            unzipped = sum(i.file_size for i in zf.infolist())
            dirs["source-only"] = tmp / "source-only"
            zf.extractall(dirs["source-only"], [n for n in zf.namelist() if "/__pycache__/" not in f"/{n}"])
        env = _stage_env(stage)
        runtime_env = {**env, "PYTHONPATH": str(_runtime_sdk(tmp / "var-runtime"))}
        api_env = _function_env(env, stage, "")
        plan = [(dirs["shipped"], _function_env(env, stage, sfx), mods) for sfx, mods in FUNCTIONS.items()]
        plan += [
            (dirs["full"], api_env, ()),
            (dirs["runtime"], _function_env(runtime_env, stage, ""), ()),
            (dirs["source-only"], api_env, ()),
        ]
        api, tick, worker, events, full, runtime, source = _import_ms(plan, runs)
        top = _top_imports(dirs["shipped"], api_env)
        return {
            "package_mb": round(zips["shipped"].stat().st_size / 1e6, 2),
            "package_unzipped_mb": round(unzipped / 1e6, 1),
            "package_full_sdk_mb": round(zips["full"].stat().st_size / 1e6, 2),
            "package_runtime_sdk_mb": round(zips["runtime"].stat().st_size / 1e6, 2),
            "cold_import_ms": api[0],
            "cold_import_tick_ms": tick[0],
            "cold_import_worker_ms": worker[0],
            "cold_import_aws_events_ms": events[0],
            "cold_import_full_sdk_ms": full[0],
            "cold_import_runtime_sdk_ms": runtime[0],
            "cold_import_source_only_ms": source[0],
            "cold_import_wall_ms": {
                "api": api[1],
                "tick": tick[1],
                "worker": worker[1],
                "aws_events": events[1],
                "full_sdk": full[1],
                "runtime_sdk": runtime[1],
                "source_only": source[1],
            },
            "cold_import_top_ms": top,
        }


def _start_local(
    env: dict[str, str], base: str, log: Path | None = None, timeout: float = 600
) -> tuple[subprocess.Popen[bytes], float]:
    """`python -m local` (its JSON log lines into `log`); returns it and the seconds until /health
    answered 200."""
    started = time.monotonic()
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "local"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"python -m local exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, round(time.monotonic() - started, 2)
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the local stack did not become ready")


def _events(log: Path, message: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("message") == message:
            out.append(event)
    return out


def _stop_local(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # a clean stop flushes the state journal
    proc.wait(timeout=60)


def local_restart(tasks: int) -> dict[str, object]:
    """Store `tasks` tasks in a fresh state directory, stop, and time the restart to /health."""
    from bench.common import store_hourly_tasks
    from bench.lag import LocalStackProcess, call

    with tempfile.TemporaryDirectory() as state:
        empty = LocalStackProcess(tick_seconds=60)
        proc, memory_s = _start_local(empty.env, empty.base)
        _stop_local(proc)

        first = LocalStackProcess(tick_seconds=60)
        first.env["TASKAPI_STATE"] = state
        proc, _ = _start_local(first.env, first.base)
        try:
            agent = call(first.base, "POST", "/agents", first.admin, {"name": "restart-bench"})
            import boto3

            dynamodb = boto3.client(
                "dynamodb",
                endpoint_url=first.moto_endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            now = int(time.time())
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            next_hour = (now // 3600 + 1) * 3600
            store_hourly_tasks(dynamodb, first.prefix, agent["agent_id"], created, 0, tasks, next_hour, running=True)
        finally:
            _stop_local(proc)

        again = LocalStackProcess(tick_seconds=60)
        again.env.update(TASKAPI_STATE=state, POWERTOOLS_LOG_LEVEL="INFO")
        log = Path(state) / "restart.log"
        proc, restart_s = _start_local(again.env, again.base, log)
        try:
            listed = call(again.base, "GET", f"/tasks?limit=1&created_by={agent['agent_id']}", agent["token"])
            if not listed["tasks"]:
                raise RuntimeError("the restarted stack has none of the stored tasks")
            state_mb = sum(f.stat().st_size for f in Path(state).iterdir() if f != log) / 1e6
        finally:
            _stop_local(proc)
        restored = _events(log, "state_restored")[0]
        first_tick = [e for e in _events(log, "tick") if "duration_ms" in e][0]
    return {
        "local_restart_s": restart_s,
        "local_restart_tasks": tasks,
        # of which: loading the items into the emulator, and the first tick (moto's Query of the
        # 10,000 due entries, as an in-memory stack holding them would pay too)
        "local_restore_s": round(float(restored["restore_ms"]) / 1000, 2),  # type: ignore[arg-type]
        "local_restart_first_tick_s": round(float(first_tick["duration_ms"]) / 1000, 2),  # type: ignore[arg-type]
        "local_state_mb": round(state_mb, 1),
        "local_start_memory_s": memory_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="prod")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-build", action="store_true", help="measure build/bench/<stage>/ as a previous run built it")
    ap.add_argument("--restart-tasks", type=int, default=10_000)
    ap.add_argument("--no-restart", action="store_true", help="skip local_restart_s")
    ap.add_argument("--only-restart", action="store_true", help="measure local_restart_s only")
    args = ap.parse_args(argv)
    out = ROOT / "build" / "bench"
    figures: dict[str, object] = {}
    if not args.only_restart:
        target = out / args.stage if args.no_build else package(args.stage, out, trim=False)
        figures.update(measure(target / "deployment.zip", args.stage, args.runs))
    if not args.no_restart:
        figures.update(local_restart(args.restart_tasks))
    for key, value in figures.items():
        print(f"{key}: {value}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
