"""How long the params.yaml training budget takes, and what it reaches, on the reference table.

    .venv/bin/python benchmarks/bench_training.py [--csv PATH] [--rows N] [--candidates a,b] [--json]

Reads the real BankChurners table (leak columns dropped), splits it as the featurize stage does
(stratified, features.test_size, features.seed), and runs `train_candidates` with the budgets in
params.yaml against a throw-away MLflow SQLite store. Prints the wall time of each phase per candidate
(search, out-of-fold threshold, refit, MLflow logging) and the hold-out metrics. Run it on an otherwise idle
machine: the figures are wall-clock on however many cores train.n_jobs uses. CPU seconds (this process
plus its joblib workers) are printed too: on a shared machine, cpu / n_jobs estimates the idle wall time.

This environment sets PYTHONDONTWRITEBYTECODE=1 and the venv holds no .pyc files, so every process
(each joblib worker too) compiles its imports from source; a deployed image has bytecode. To measure
like a deployment without touching the venv:
    env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/churnops-pycache .venv/bin/python benchmarks/...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "BankChurners.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--rows", type=int, default=None, help="subsample the table (stratified)")
    parser.add_argument("--candidates", default=None, help="comma-separated subset of train.candidates")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    import pandas as pd
    from sklearn.model_selection import train_test_split

    from churnops.logs import configure_logging
    from churnops.models.training import train_candidates
    from churnops.settings import load_settings

    configure_logging()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               "CHURNOPS_ARTIFACT_ROOT": f"{tmp}/artifacts"}
        settings = load_settings(home=REPO, env=env)
        schema = settings.schema
        frame = pd.read_csv(args.csv).drop(columns=list(schema.drop_columns))
        frame["churn"] = (frame.pop(schema.target.column) == schema.target.positive).astype(int)
        if args.rows:
            frame, _ = train_test_split(frame, train_size=args.rows, stratify=frame["churn"], random_state=0)
        train, test = train_test_split(frame, test_size=settings.params.features.test_size,
                                       stratify=frame["churn"], random_state=settings.params.features.seed)
        from mlflow import MlflowClient

        MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()  # create the store outside the timing
        candidates = args.candidates.split(",") if args.candidates else None
        start = time.perf_counter()
        result = train_candidates(train, test, settings, data_version="bench", git_commit="bench",
                                  candidates=candidates)
        total = time.perf_counter() - start
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)  # so the workers' CPU time is counted below
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    doc = {
        "rows": len(frame), "train_rows": len(train), "test_rows": len(test), "cpus": os.cpu_count(),
        "n_jobs": settings.params.train.n_jobs, "total_seconds": round(total, 1),
        "cpu_seconds_whole_process": round(cpu, 1), "load_average": os.getloadavg(),
        "best": result.best_candidate,
        "candidates": {
            c.candidate: {
                "seconds": {k: round(v, 1) for k, v in c.seconds.items()},
                "search_iterations": settings.params.train.search_iterations[c.candidate],
                "threshold": round(c.threshold, 4),
                "cv": {k: round(v["mean"], 4) for k, v in c.cv_metrics.items()},
                "holdout": {k: round(v, 4) for k, v in c.holdout_metrics.items()},
                "best_params": c.best_params,
            }
            for c in result.candidates
        },
    }
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return
    print(f"{doc['rows']} rows (train {doc['train_rows']}, test {doc['test_rows']}), n_jobs {doc['n_jobs']}, "
          f"{doc['cpus']} cpus: total {doc['total_seconds']} s (cpu {doc['cpu_seconds_whole_process']} s, "
          f"load {doc['load_average'][0]:.1f}), best {doc['best']}")
    for name, c in doc["candidates"].items():
        h = c["holdout"]
        print(f"  {name:<20} iters {c['search_iterations']:>3}  {c['seconds']}  thr {c['threshold']:.3f}  "
              f"AUC {h['roc_auc']:.4f}  PR-AUC {h['pr_auc']:.4f}  F1 {h['f1']:.4f}  "
              f"P {h['precision']:.4f}  R {h['recall']:.4f}")


if __name__ == "__main__":
    main()
