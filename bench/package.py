"""Deployment package figures: its size and the cold import of the app from it.

    python bench/package.py [--stage prod] [--runs 7] [--no-build]

Builds the package (`python -m infra.package`, as `make package`) unless --no-build, then:
- package_mb: size of deployment.zip (MB = 10^6 bytes; Lambda's limit is 50 MB zipped,
  250 MB unzipped: package_unzipped_mb);
- cold_import_ms: median wall time of `import app` in a fresh interpreter (`python -S`: only
  the stdlib and what the package ships) run from the unzipped package with the stage's
  environment, writing no bytecode (/var/task is read-only on Lambda): what a cold start pays
  for imports, with the .pyc that infra/package.py adds to the zip;
- cold_import_source_only_ms: the same with the .pyc removed (chalice's zip as it is: every
  cold start compiles what it imports);
- cold_import_top_ms: the slowest imports of `app` (python -X importtime, cumulative ms).
The machine's load shows in the timings: compare figures of one run.
Merges the figures into bench/results.json (reads it, updates these keys, writes it back).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.package import load_config, package  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
TIMED_IMPORT = "import time; t = time.perf_counter(); import app; print((time.perf_counter() - t) * 1000)"


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


def _import_ms(code_dirs: list[Path], env: dict[str, str], runs: int) -> list[float]:
    """Median `import app` time per directory; the directories take turns, so load is shared."""
    env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    # -S: no site-packages, so only what the package ships (and the stdlib) is importable.
    cmd = [sys.executable, "-S", "-c", TIMED_IMPORT]
    times: list[list[float]] = [[] for _ in code_dirs]
    for _ in range(runs):
        for i, code_dir in enumerate(code_dirs):
            out = subprocess.run(cmd, cwd=code_dir, env=env, check=True, capture_output=True, text=True)
            times[i].append(float(out.stdout.strip().splitlines()[-1]))
    return [round(statistics.median(t), 1) for t in times]


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


def measure(zip_path: Path, stage: str, runs: int) -> dict[str, object]:
    with zipfile.ZipFile(zip_path) as zf, tempfile.TemporaryDirectory() as tmp:
        unzipped = sum(i.file_size for i in zf.infolist())
        shipped, source_only = Path(tmp) / "shipped", Path(tmp) / "source-only"
        zf.extractall(shipped)
        zf.extractall(source_only, [n for n in zf.namelist() if "/__pycache__/" not in f"/{n}"])
        env = _stage_env(stage)
        cold, source = _import_ms([shipped, source_only], env, runs)
        top = _top_imports(shipped, env)
    return {
        "package_mb": round(zip_path.stat().st_size / 1e6, 2),
        "package_unzipped_mb": round(unzipped / 1e6, 1),
        "cold_import_ms": cold,
        "cold_import_source_only_ms": source,
        "cold_import_top_ms": top,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="prod")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-build", action="store_true", help="measure build/<stage>/deployment.zip as it is")
    args = ap.parse_args(argv)
    target = ROOT / "build" / args.stage if args.no_build else package(args.stage)
    figures = measure(target / "deployment.zip", args.stage, args.runs)
    for key, value in figures.items():
        print(f"{key}: {value}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(figures)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
