"""How long loading a registered model takes: what serving pays at start and on every champion change,
and batch scoring once per run.

    .venv/bin/python benchmarks/bench_model_load.py [--rows 10000] [--repeats 5] [--json F.json]

Builds a throw-away project home (generated customers), fits the three candidates at the sizes training
produces (XGBoost 700 trees of depth 6, random forest 250 trees of depth 20, logistic regression), logs
and registers each through ``churnops.tracking`` / ``churnops.registry``, then times for each:

- ``log_s``: ``tracking.log_model`` (writing the files, MLflow's upload, the digests);
- ``load_warm_s``: ``registry.load_version`` in this process (median of ``--repeats``), what a champion
  change costs a running worker: registry query, download, SHA-256 check, reading the files, and the
  first row scored (serving's check: compiles and verifies the trees);
- ``load_cold_s``: the same in a fresh Python process, imports included, what a worker pays at start.

It uses only ``tracking.log_model``, ``registry.register`` and ``registry.load_version``, so the same
script measures an older churnops (e.g. one that logged cloudpickles) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIZES = {"xgboost": {"n_estimators": 700, "max_depth": 6, "learning_rate": 0.05},
         "random_forest": {"n_estimators": 250, "max_depth": 20},
         "logistic_regression": {"C": 1.0}}
COLD = """
import sys, time
t = time.perf_counter()
from churnops import registry
from churnops.settings import load_settings
from serving.model import sample_record
settings = load_settings(home=sys.argv[1], env={})
registry.load_version(settings, sys.argv[2]).scorer.predict_proba_records([sample_record(settings.schema)])
print(time.perf_counter() - t)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import mlflow
    import yaml

    from churnops import registry, tracking
    from churnops.data.generate import generate
    from churnops.models.candidates import build_pipeline
    from churnops.settings import load_settings
    from serving.model import sample_record

    with tempfile.TemporaryDirectory(prefix="bench-model-load-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        settings = load_settings(home=home, env={})
        schema = settings.schema
        table = generate(schema, args.rows, seed=42)
        X = table[schema.feature_columns]  # noqa: N806
        y = (table[schema.target.column] == schema.target.positive).astype(int).to_numpy()
        experiment = tracking.configure_tracking(settings)
        results: dict[str, Any] = {"load_average": os.getloadavg(), "rows": args.rows, "models": {}}
        for candidate, size in SIZES.items():
            pipeline = build_pipeline(candidate, schema, seed=0, params=size).fit(X, y)
            with mlflow.start_run(experiment_id=experiment) as run:
                t = time.perf_counter()
                info = tracking.log_model(pipeline, X, settings)
                log_s = time.perf_counter() - t
                mlflow.log_param("threshold", 0.5)
                mlflow.set_tags({tracking.TAG_MODEL_URI: info.model_uri,
                                 tracking.TAG_MODEL_ID: info.model_id, "candidate": candidate})
            version = registry.register(settings, run.info.run_id)
            warm = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                registry.load_version(settings, version).scorer.predict_proba_records([sample_record(schema)])
                warm.append(time.perf_counter() - t)
            cold = subprocess.run([sys.executable, "-c", COLD, str(home), version], capture_output=True,
                                  text=True, check=True, cwd=tmp).stdout.split()[-1]
            uri = f"models:/{settings.params.register_.model_name}/{version}"
            dst = f"{tmp}/dl-{version}"
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst))
            size_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            results["models"][candidate] = {"log_s": round(log_s, 3),
                                            "load_warm_s": round(statistics.median(warm), 3),
                                            "load_cold_s": round(float(cold), 3), "files_bytes": size_bytes}
            print(f"{candidate:20s} log {log_s:6.2f} s  load warm {statistics.median(warm):6.3f} s  "
                  f"cold {float(cold):6.2f} s  files {size_bytes / 1e6:6.2f} MB", flush=True)
        results["load_average_after"] = os.getloadavg()
        print(f"load average before/after: {results['load_average']} / {results['load_average_after']}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
