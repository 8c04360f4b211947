"""The model stages of dvc.yaml: train -> evaluate -> register, plus the run report.

Each stage is a function of the settings that reads the files the stage before it wrote, so `dvc repro`,
`churnops stage <name>` and the Airflow tasks run the same code.

- train:    tune and fit every candidate on the gold train split, tracked in MLflow (one parent run, one child
            run per candidate) -> reports/training/training.json
- evaluate: reload every *logged* model from MLflow, score the hold-out, check the scores reproduce those
            recorded at training, and write DVC metrics and plot data for the best candidate
- register: register the best candidate as @challenger and run the promotion gate -> reports/run_report.json
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.io import write_json_atomic
from churnops.logs import get_logger
from churnops.settings import Settings
from pipeline.layers import GoldPaths, StageError
from pipeline.versioning import data_version, dvc_file_for, git_commit

log = get_logger(__name__)

# Recorded hold-out metrics and a fresh score of the logged model must agree to this tolerance.
REPRODUCE_TOLERANCE = 1e-9


def training_dir(settings: Settings) -> Path:
    return settings.reports_dir / "training"


def training_json(settings: Settings) -> Path:
    return training_dir(settings) / "training.json"


def metrics_json(settings: Settings) -> Path:
    return settings.reports_dir / "metrics.json"


def plots_dir(settings: Settings) -> Path:
    return settings.reports_dir / "plots"


def run_report_json(settings: Settings) -> Path:
    return settings.reports_dir / "run_report.json"


def current_data_version(settings: Settings) -> str:
    version = data_version(dvc_file_for(settings.raw_path))
    if version is None:
        raise StageError(f"{settings.raw_path} is not tracked by DVC yet: run `churnops train --data PATH`"
                         f" (or `dvc add {settings.raw_path}`) first")
    return version


def _read_gold(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    paths = GoldPaths.of(settings)
    for p in (paths.train, paths.test):
        if not p.is_file():
            raise StageError(f"missing gold layer file {p}: run the featurize stage first")
    return pd.read_parquet(paths.train), pd.read_parquet(paths.test)


# -- train ----------------------------------------------------------------------------------------
def train_stage(settings: Settings, candidates: list[str] | None = None) -> dict[str, Any]:
    """Tune, fit and log every candidate; write reports/training/training.json."""
    from churnops.models.search import release_worker_processes
    from churnops.models.training import train_candidates

    train_df, test_df = _read_gold(settings)
    try:
        result = train_candidates(
            train_df, test_df, settings,
            data_version=current_data_version(settings),
            git_commit=git_commit(),
            candidates=candidates,
            reports_dir=training_dir(settings),
        )
    finally:
        release_worker_processes()
    return {"parent_run_id": result.parent_run_id, "best_candidate": result.best_candidate,
            "training_json": str(training_json(settings))}


# -- the train stage fanned out (Airflow maps one task per candidate) -----------------------------------
def open_training_stage(settings: Settings, candidates: list[str] | None = None) -> dict[str, Any]:
    """Check the gold split and open the MLflow parent run: what the per-candidate tasks need (small ids)."""
    from churnops.models.training import start_training

    train_df, test_df = _read_gold(settings)
    names = list(candidates or settings.params.train.candidates)
    parent = start_training(train_df, test_df, settings, current_data_version(settings), git_commit(),
                            candidates=names)
    return {"parent_run_id": parent, "candidates": names}


def train_candidate_stage(settings: Settings, candidate: str, parent_run_id: str,
                          position: str = "") -> dict[str, Any]:
    """One candidate of the fanned-out train stage, as a child run of `parent_run_id` (its result and model
    go to the MLflow store; the return value is only ids)."""
    from churnops.models.search import release_worker_processes
    from churnops.models.training import train_candidate

    train_df, test_df = _read_gold(settings)
    try:
        result = train_candidate(candidate, train_df, test_df, settings, parent_run_id,
                                 current_data_version(settings), git_commit(), position=position,
                                 reports_dir=training_dir(settings))
    finally:
        release_worker_processes()
    return {"candidate": candidate, "run_id": result.run_id}


def gather_training_stage(settings: Settings, parent_run_id: str,
                          candidates: list[str] | None = None) -> dict[str, Any]:
    """The fanned-out train stage's end: the finished candidates (read from MLflow), the best of them, the
    parent run closed, reports/training/training.json written as the one-process stage writes it.
    Candidates that did not finish are named in ``failed_candidates``; none finished: an error."""
    from churnops.models.training import collect_candidates, finish_training

    results = collect_candidates(settings, parent_run_id)
    result = finish_training(settings, parent_run_id, results, current_data_version(settings), git_commit(),
                             candidates=candidates, reports_dir=training_dir(settings))
    return {"parent_run_id": parent_run_id, "best_candidate": result.best_candidate,
            "finished_candidates": [c.candidate for c in result.candidates],
            "failed_candidates": result.failed_candidates, "training_json": str(training_json(settings))}


def load_training_result(settings: Settings):  # -> churnops.models.training.TrainingResult
    from churnops.models.training import CandidateResult, TrainingResult

    path = training_json(settings)
    if not path.is_file():
        raise StageError(f"missing {path}: run the train stage first")
    doc = json.loads(path.read_text())
    cand_fields = {f.name for f in fields(CandidateResult)}
    result_fields = {f.name for f in fields(TrainingResult)} - {"candidates"}
    return TrainingResult(
        candidates=[CandidateResult(**{k: v for k, v in c.items() if k in cand_fields})
                    for c in doc["candidates"]],
        **{k: v for k, v in doc.items() if k in result_fields},
    )


# -- evaluate -------------------------------------------------------------------------------------
def _curve_points(y: np.ndarray, proba: np.ndarray) -> tuple[list[dict], list[dict]]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, proba)
    precision, recall, _ = precision_recall_curve(y, proba)
    roc = [{"fpr": round(float(a), 5), "tpr": round(float(b), 5)} for a, b in zip(fpr, tpr, strict=True)]
    pr = [{"recall": round(float(r), 5), "precision": round(float(p), 5)}
          for r, p in zip(recall, precision, strict=True)]
    return roc, pr


def evaluate_stage(settings: Settings) -> dict[str, Any]:
    """Re-score each logged model on the hold-out; write DVC metrics and plots (best candidate)."""
    from churnops.models.evaluation import classification_metrics, predict_labels
    from churnops.models.training import split_features
    from churnops.tracking import configure_tracking, load_candidate_pipeline

    result = load_training_result(settings)
    _, test_df = _read_gold(settings)
    X, y = split_features(test_df, settings.schema, source="hold-out")  # noqa: N806
    configure_tracking(settings)
    candidates: dict[str, dict[str, float]] = {}
    best_proba = None
    for cand in result.candidates:
        model = load_candidate_pipeline(cand.run_id, cand.model_uri, settings)
        proba = model.predict_proba(X)[:, 1]
        fresh = classification_metrics(y, proba, cand.threshold)
        drift = {k: abs(fresh[k] - v) for k, v in cand.holdout_metrics.items() if k in fresh}
        if max(drift.values(), default=0.0) > REPRODUCE_TOLERANCE:
            raise StageError(f"the logged model of {cand.candidate} ({cand.model_uri}) does not reproduce "
                             f"its recorded hold-out metrics: differences {drift}")
        candidates[cand.candidate] = {**fresh, "threshold": cand.threshold}
        if cand.candidate == result.best_candidate:
            best_proba = proba
    assert best_proba is not None
    best = result.best
    metrics = {"best_candidate": result.best_candidate, "selection": result.selection_metric,
               "holdout_rows": len(y), "best": candidates[best.candidate], "candidates": candidates}
    write_json_atomic(metrics_json(settings), metrics)
    roc, pr = _curve_points(y, best_proba)
    pred = predict_labels(best_proba, best.threshold)
    confusion = [{"actual": int(a), "predicted": int(p)} for a, p in zip(y, pred, strict=True)]
    write_json_atomic(plots_dir(settings) / "roc.json", roc)
    write_json_atomic(plots_dir(settings) / "precision_recall.json", pr)
    write_json_atomic(plots_dir(settings) / "confusion.json", confusion)
    log.info("evaluate.done", best=best.candidate,
             **{f"best_{k}": round(v, 4) for k, v in candidates[best.candidate].items()})
    return metrics


# -- register -------------------------------------------------------------------------------------
def _row_counts(settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    validation = settings.reports_dir / "validation.json"
    if validation.is_file():
        counts["raw"] = int(json.loads(validation.read_text()).get("rows", 0))
    paths = GoldPaths.of(settings)
    for name, path in (("customers", paths.customers), ("train", paths.train), ("test", paths.test)):
        if path.is_file():
            import pyarrow.parquet as pq

            counts[name] = pq.ParquetFile(path).metadata.num_rows
    return counts


def _validation_summary(settings: Settings) -> dict[str, Any]:
    path = settings.reports_dir / "validation.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {k: doc[k] for k in ("ok", "rows", "counts", "source") if k in doc} | {
        "issues": [{k: i.get(k) for k in ("column", "rule", "severity", "count")}
                   for i in doc.get("issues", [])]}


def register_stage(settings: Settings) -> dict[str, Any]:
    """Register the best candidate, run the promotion gate, write reports/run_report.json."""
    from churnops import registry
    from pipeline.training_data import data_check, next_training_data

    result = load_training_result(settings)
    _, test_df = _read_gold(settings)
    checked = data_check(settings, pd.read_parquet(GoldPaths.of(settings).customers),
                         registry.champion_info(settings))
    decision = registry.register_best(settings, result, test_df)
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_version": result.data_version,
        "git_commit": result.git_commit,
        "params_hash": result.params_hash,
        "mlflow_parent_run_id": result.parent_run_id,
        "rows": _row_counts(settings),
        "validation": _validation_summary(settings),
        "best_candidate": result.best_candidate,
        "selection": result.selection_metric,
        "candidates": {c.candidate: c.holdout_metrics for c in result.candidates},
        "registered_version": decision.challenger_version,
        "promotion": decision.to_dict(),
        "champion": registry.champion_version(settings),
        "training_seconds": round(result.seconds, 1),
        "data_check": checked,
        "next_training_data": next_training_data(result.data_version, decision.promoted,
                                                 registry.champion_info(settings)),
        "failed_candidates": result.failed_candidates,
    }
    write_json_atomic(run_report_json(settings), report)
    log.info("register.done", version=decision.challenger_version, promoted=decision.promoted,
             champion=report["champion"], reason=decision.reason)
    return report
