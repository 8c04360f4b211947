"""Quality and cost of the hyper-parameter search on one generated table and one split, for two code trees.

    .venv/bin/python benchmarks/bench_search_quality.py --rows 100000 [--code-root DIR] [--params FILE]
        [--out result.json]

Generates `--rows` customers (seed 11, as bench_pipeline.py), splits them as the featurize stage does
(stratified, features.test_size, features.seed) and runs every candidate's ``search_candidate`` on the
training split, then scores each refitted candidate on the hold-out; the champion is the candidate with the
best CV score (train.scoring), as ``train_candidates`` picks it. No MLflow, no DVC: only the search.

``--code-root`` runs another tree's library (for "today's search": ``git archive <commit> src params.yaml |
tar -x -C DIR``) on the same table and split, so two runs compare the search strategies and nothing else.
Prints (and writes with ``--out``) per candidate: seconds, CPU seconds, best CV score, hold-out ROC-AUC and
F1; and the load average at the start and the end (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu_s() -> float:
    """CPU seconds of this process, its live joblib workers and its reaped children."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--code-root", type=Path, default=REPO)
    parser.add_argument("--params", type=Path, default=None, help="default: <code-root>/params.yaml")
    parser.add_argument("--candidates", default=None, help="comma-separated subset of train.candidates")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.code_root.resolve()
    sys.path[:0] = [str(root / "src"), str(root)]

    from sklearn.model_selection import train_test_split

    from churnops.data.generate import generate
    from churnops.models.evaluation import evaluate
    from churnops.models.search import release_worker_processes, search_candidate
    from churnops.models.training import split_features
    from churnops.settings import load_settings

    settings = load_settings(home=root, params_path=args.params or root / "params.yaml", env={})
    schema, train_cfg = settings.schema, settings.params.train
    load_start = os.getloadavg()
    frame = generate(schema, args.rows, args.seed)
    gold = frame[[schema.id_column, *schema.feature_columns]].copy()
    gold["churn"] = (frame[schema.target.column] == schema.target.positive).astype("int8")
    fs = settings.params.features
    train, test = train_test_split(gold, test_size=fs.test_size, random_state=fs.seed, stratify=gold["churn"])
    train_x, train_y = split_features(train.reset_index(drop=True), schema, source="train split")
    test_x, test_y = split_features(test.reset_index(drop=True), schema, source="test split")
    names = args.candidates.split(",") if args.candidates else list(train_cfg.candidates)
    out: dict = {"code_root": str(root), "rows": args.rows, "train_rows": len(train_x),
                 "test_rows": len(test_x), "candidates": {},
                 "loadavg_start": [round(x, 2) for x in load_start]}
    started, cpu_started = time.perf_counter(), _cpu_s()
    for name in names:
        t0, c0 = time.perf_counter(), _cpu_s()
        result = search_candidate(name, train_x, train_y, settings)
        holdout = evaluate(result.pipeline, test_x, test_y, result.threshold).metrics
        out["candidates"][name] = {
            "seconds": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_s() - c0, 1),
            f"cv_{train_cfg.scoring}": round(result.cv_metrics[train_cfg.scoring]["mean"], 5),
            "holdout_roc_auc": round(holdout["roc_auc"], 5), "holdout_f1": round(holdout["f1"], 5),
            "best_params": result.best_params,
            "phases_s": {k: round(v, 1) for k, v in result.seconds.items()},
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps({name: out["candidates"][name]}), flush=True)
    release_worker_processes()
    best = max(out["candidates"], key=lambda n: out["candidates"][n][f"cv_{train_cfg.scoring}"])
    out.update(champion=best, champion_holdout_roc_auc=out["candidates"][best]["holdout_roc_auc"],
               seconds=round(time.perf_counter() - started, 1), cpu_s=round(_cpu_s() - cpu_started, 1),
               loadavg_end=[round(x, 2) for x in os.getloadavg()])
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
