"""Wall time of the whole training pipeline (`churnops train --data`) on synthetic tables.

    .venv/bin/python benchmarks/bench_pipeline.py [--rows 10000 100000] [--params params.yaml]

For each size: a fresh project home in a temporary directory (the repo's params.yaml with its real search
budgets, its dvc.yaml, a git repository, a local DVC remote, a SQLite MLflow store), a generated table, and
one `churnops train --data` run timed from outside: DVC add + push, validate, featurize, train (every
candidate's hyper-parameter search with CV), evaluate, register. Prints wall time, CPU seconds of the run's
process tree and the hold-out metrics of the best candidate, side by side per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    env.update(CHURNOPS_HOME=str(home), DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    return subprocess.run([str(BIN / "churnops"), *args], cwd=home, env=env, capture_output=True, text=True,
                          check=True)


def one(rows: int, params: Path, workdir: Path) -> dict:
    home = workdir / f"home-{rows}"
    home.mkdir(parents=True)
    shutil.copy(params, home / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", home / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=home, check=True)
    run(home, "data", "generate", "--rows", str(rows), "--seed", "11", "--out", "incoming/customers.csv")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = run(home, "train", "--data", "incoming/customers.csv", "--json")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout)
    best = report["candidates"][report["best_candidate"]]
    return {"rows": rows, "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
            "best": report["best_candidate"], "roc_auc": round(best["roc_auc"], 4),
            "f1": round(best["f1"], 4),
            "training_s": report.get("training_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="churnops-bench-pipeline-") as tmp:
        results = []
        for rows in args.rows:
            results.append(one(rows, args.params, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'rows':>9} {'wall s':>8} {'cpu s':>8} {'train s':>8} {'best':>14} {'roc_auc':>8} {'f1':>7}")
    for r in results:
        print(f"{r['rows']:>9,} {r['wall_s']:>8} {r['cpu_s']:>8} {r['training_s']!s:>8} {r['best']:>14} "
              f"{r['roc_auc']:>8} {r['f1']:>7}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
