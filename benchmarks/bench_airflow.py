"""The training DAG in Airflow vs the same stages from the command line, side by side in one run.

    .venv/bin/python benchmarks/bench_airflow.py [--rows 10000] [--iterations 3] [--cv-folds 3] [--json]

Two fresh project homes get the same generated table and the same params.yaml (the repository's, with the
search budget set to ``--iterations`` per candidate and ``--cv-folds`` folds):

1. command line: ``churnops train --data customers.csv`` (DVC add + push, ``dvc repro`` of the five stages)
   then ``churnops features push`` (what the DAG's push_features task does), timed as wall clock, once
   before and once after the Airflow run (the baseline is their mean: the load of a shared machine drifts);
2. Airflow: ``airflow standalone`` started with :class:`pipeline.airflow_local.LocalAirflow` (its start-up
   is reported apart), churn_training triggered over the REST API exactly as the UI does, timed from the
   trigger request until the run reports success; also the run's own start -> end and the sum of task
   durations (what the tasks did, without the scheduling gaps).

Also the parse time of each DAG file as the dag-processor measures it (``airflow dags report``).
Results go to stdout (markdown) and ``benchmarks/out/airflow.json``. Needs Redis (REDIS_URL or the default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
ISOLATE = (
    "CHURNOPS_HOME",
    "CHURNOPS_PARAMS",
    "MLFLOW_TRACKING_URI",
    "CHURNOPS_ARTIFACT_ROOT",
    "CHURNOPS_DVC_REMOTE",
    "CHURNOPS_DATABASE_URL",
    "CHURNOPS_SERVING_URL",
    "AIRFLOW_HOME",
)


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATE and not k.startswith("AIRFLOW__")}
    env.update(
        {
            "CHURNOPS_HOME": str(home),
            "DVC_NO_ANALYTICS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PATH": str(BIN) + os.pathsep + env.get("PATH", ""),
        }
    )
    return env


def make_home(root: Path, data: Path, iterations: int, cv_folds: int) -> Path:
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["cv_folds"] = cv_folds
    params["train"]["search_iterations"] = {c: iterations for c in params["train"]["candidates"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "incoming").mkdir()
    shutil.copy(data, root / "incoming" / "customers.csv")
    return root


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return seconds


def run_cli(home: Path) -> dict[str, float]:
    env = clean_env(home)
    churnops = str(BIN / "churnops")
    train = timed([churnops, "--home", str(home), "train", "--data", "incoming/customers.csv"], env, home)
    push = timed([churnops, "--home", str(home), "features", "push"], env, home)
    return {"train_s": round(train, 1), "features_push_s": round(push, 1), "total_s": round(train + push, 1)}


def parse_times(env: dict[str, str]) -> list[dict]:
    proc = subprocess.run(
        [str(BIN / "airflow"), "dags", "report", "--output", "json"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return [{"error": proc.stderr[-2000:]}]
    start = proc.stdout.find("[{")  # after Airflow's own warnings on stdout
    if start < 0:
        return [{"error": proc.stdout[-2000:]}]
    rows = json.loads(proc.stdout[start:])
    return [
        {
            "file": Path(r["file"]).name,
            "seconds": float(str(r["duration"]).split(":")[-1]),
            "dags": r.get("dag_num"),
            "tasks": r.get("task_num"),
        }
        for r in rows
    ]


def _iso_seconds(a: str, b: str) -> float:
    from datetime import datetime

    return (
        datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
    ).total_seconds()


def run_airflow(home: Path, parallelism: int) -> dict:
    from pipeline.airflow_local import LocalAirflow

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(clean_env(home))
    for var in [k for k in os.environ if k.startswith("AIRFLOW__") or k in ISOLATE[1:]]:
        os.environ.pop(var, None)
    local = LocalAirflow(project_home=home, port=port, parallelism=parallelism)
    try:
        started = time.perf_counter()
        local.start(timeout_s=900)
        startup = time.perf_counter() - started
        parse = parse_times(local.environment())
        api = local.api()
        t0 = time.perf_counter()
        run = api.trigger("churn_training", {"data_path": "incoming/customers.csv", "reason": "benchmark"})
        final = api.wait_for_run("churn_training", run["dag_run_id"], timeout_s=7200, poll_s=1.0)
        wall = time.perf_counter() - t0
        tis = api.task_instances("churn_training", run["dag_run_id"])
        if final["state"] != "success":
            raise SystemExit(
                f"churn_training ended {final['state']}: {[(t['task_id'], t['state']) for t in tis]}"
            )
        tasks = {
            t["task_id"]: round(float(t.get("duration") or 0), 1) for t in tis if t["state"] == "success"
        }
        return {
            "startup_s": round(startup, 1),
            "wall_s": round(wall, 1),
            "run_s": round(_iso_seconds(final["start_date"], final["end_date"]), 1),
            "task_sum_s": round(sum(tasks.values()), 1),
            "tasks": tasks,
            "parse": parse,
        }
    finally:
        local.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--iterations", type=int, default=3, help="search iterations per candidate")
    ap.add_argument("--cv-folds", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp:
        root = Path(tmp)
        schema = load_settings(home=REPO, env={}).schema
        data = generate_to_csv(schema, rows=args.rows, seed=42, out=root / "customers.csv")
        # CLI before and after Airflow: the machine's load drifts, the mean of the two is the baseline
        cli_before = run_cli(make_home(root / "cli-1", data, args.iterations, args.cv_folds))
        print(f"CLI: {cli_before}", file=sys.stderr, flush=True)
        airflow = run_airflow(
            make_home(root / "airflow", data, args.iterations, args.cv_folds), args.parallelism
        )
        print(f"Airflow: {airflow}", file=sys.stderr, flush=True)
        cli_after = run_cli(make_home(root / "cli-2", data, args.iterations, args.cv_folds))
    cli = {k: round((cli_before[k] + cli_after[k]) / 2, 1) for k in cli_before}
    cli["runs_total_s"] = [cli_before["total_s"], cli_after["total_s"]]
    result = {
        "rows": args.rows,
        "iterations": args.iterations,
        "cv_folds": args.cv_folds,
        "parallelism": args.parallelism,
        "load_avg_at_start": round(load, 1),
        "cpus": os.cpu_count(),
        "cli": cli,
        "airflow": airflow,
        "ratio_wall": round(airflow["wall_s"] / cli["total_s"], 2),
        "ratio_task_sum": round(airflow["task_sum_s"] / cli["total_s"], 2),
    }
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "airflow.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"rows {args.rows}, {args.iterations} search iterations x {args.cv_folds} folds per candidate, "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    print("| path | wall s | ratio to CLI |\n|---|---:|---:|")
    print(
        f"| CLI: churnops train + features push (mean of {cli['runs_total_s']}) | {cli['total_s']} | 1.00 |"
    )
    print(f"| Airflow: trigger -> success | {airflow['wall_s']} | {result['ratio_wall']} |")
    print(f"| Airflow: sum of task durations | {airflow['task_sum_s']} | {result['ratio_task_sum']} |")
    print(
        f"Airflow start-up (not in the ratio): {airflow['startup_s']} s; run start->end {airflow['run_s']} s"
    )
    print("tasks:", ", ".join(f"{k} {v}" for k, v in airflow["tasks"].items()))
    print("parse:", ", ".join(f"{p.get('file')} {p.get('seconds')} s" for p in airflow["parse"]))


if __name__ == "__main__":
    main()
