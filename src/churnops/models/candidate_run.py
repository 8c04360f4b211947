"""What one candidate's MLflow run records (inside the active child run of a training).

:func:`log_candidate_run`: params (the best hyper-parameters and how they were found), CV / OOF / hold-out
metrics, evaluation artifacts and plots, the search table, the reference sample for drift monitoring, the
outlier detector fitted on it (with its SHA-256), and the model itself (:func:`churnops.tracking.log_model`).
The run layout and the names of its tags and artifacts are :mod:`churnops.tracking`'s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.settings import Settings
from churnops.tracking import (
    OUTLIER_ARTIFACT,
    REFERENCE_ARTIFACT,
    REFERENCE_MAX_ROWS,
    TAG_MODEL_ID,
    TAG_MODEL_URI,
    TAG_OUTLIERS_SHA256,
    log_model,
)

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from churnops.models.evaluation import Evaluation
    from churnops.models.search import SearchResult


def reference_sample(train_X: pd.DataFrame, settings: Settings) -> pd.DataFrame:  # noqa: N803
    """The training split's raw feature columns: at most REFERENCE_MAX_ROWS rows, sampled with the seed."""
    frame = train_X[settings.schema.feature_columns]
    if len(frame) > REFERENCE_MAX_ROWS:
        frame = frame.sample(n=REFERENCE_MAX_ROWS, random_state=settings.params.train.seed)
    return frame.reset_index(drop=True)


def flat_metrics(search: SearchResult, evaluation: Evaluation) -> dict[str, float]:
    """Run metrics: ``cv_<m>_mean/std``, ``oof_<m>`` (at the threshold), ``test_<m>``, ``<phase>_seconds``."""
    out: dict[str, float] = {}
    for name, stats in search.cv_metrics.items():
        out[f"cv_{name}_mean"] = stats["mean"]
        out[f"cv_{name}_std"] = stats["std"]
    out.update({f"oof_{k}": v for k, v in search.oof_metrics.items()})
    out.update({f"test_{k}": v for k, v in evaluation.metrics.items()})
    out.update({f"{k}_seconds": v for k, v in search.seconds.items()})
    return out


def run_params(search: SearchResult, settings: Settings, n_train: int, n_test: int) -> dict[str, Any]:
    """Run params: the best hyper-parameters (bare names) and how they were found."""
    params: dict[str, Any] = {k: ("None" if v is None else v) for k, v in search.best_params.items()}
    params.update(
        candidate=search.candidate,
        threshold=round(search.threshold, 6),
        tune_threshold=settings.params.evaluate.tune_threshold,
        cv_folds=search.cv_folds,
        search_iterations=search.n_iter,
        search_rows=search.search_rows,
        search_rounds=search.rounds,
        scoring=search.scoring,
        seed=settings.params.train.seed,
        train_rows=n_train,
        test_rows=n_test,
    )
    return params


def write_candidate_artifacts(
    search: SearchResult, evaluation: Evaluation, importance: pd.Series | None, out_dir: Path
) -> Path:
    """Write a candidate's evaluation files and plots under `out_dir` (evaluation/, plots/, search/)."""
    from churnops.io import atomic_path, write_json_atomic, write_text_atomic
    from churnops.models.plots import write_plots

    ev = out_dir / "evaluation"
    write_json_atomic(ev / "metrics.json", {
        "candidate": search.candidate,
        "threshold": search.threshold,
        "holdout": evaluation.metrics,
        "cv": search.cv_metrics,
        "oof": search.oof_metrics,
        "best_params": search.best_params,
        "rows": evaluation.n_rows,
    })
    write_json_atomic(ev / "confusion_matrix.json", {
        "labels": [0, 1], "rows": "actual", "columns": "predicted", "threshold": search.threshold,
        "matrix": evaluation.confusion_matrix,
    })
    write_text_atomic(ev / "classification_report.txt", evaluation.report_text)
    write_json_atomic(ev / "classification_report.json", evaluation.report)
    if importance is not None:
        with atomic_path(ev / "feature_importance.csv") as tmp:
            importance.rename_axis("feature").to_frame().to_csv(tmp)
    with atomic_path(out_dir / "search" / "cv_results.csv") as tmp:
        search.cv_results.to_csv(tmp, index=False)
    write_plots(evaluation.y_true, evaluation.proba, search.threshold, importance, out_dir / "plots",
                title=search.candidate)
    return out_dir


def log_candidate_run(
    search: SearchResult,
    evaluation: Evaluation,
    *,
    train_X: pd.DataFrame,  # noqa: N803
    settings: Settings,
    importance: pd.Series | None,
    artifact_dir: Path | None = None,
) -> ModelInfo:
    """Record a fitted candidate in the active MLflow run; returns the logged model's info.

    `artifact_dir`, when given, keeps the evaluation files and plots (for DVC reports); otherwise they
    are written to a temporary folder that is removed after logging.
    """
    import mlflow

    mlflow.log_params(run_params(search, settings, len(train_X), evaluation.n_rows))
    mlflow.log_metrics(flat_metrics(search, evaluation))
    with tempfile.TemporaryDirectory(prefix="churnops-run-") as tmp:
        root = Path(tmp) if artifact_dir is None else Path(artifact_dir)
        write_candidate_artifacts(search, evaluation, importance, root)
        for sub in ("evaluation", "plots", "search"):
            mlflow.log_artifacts(str(root / sub), artifact_path=sub)
        reference = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        sample = reference_sample(train_X, settings)
        sample.to_parquet(reference, index=False)
        mlflow.log_artifact(str(reference), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        # The outlier detector travels with the model, fitted on the same reference drift monitoring uses.
        from churnops.integrity import sha256_file
        from churnops.outliers import fit_from_settings

        detector_path = fit_from_settings(sample, settings).save(Path(tmp) / Path(OUTLIER_ARTIFACT).name)
        mlflow.log_artifact(str(detector_path), artifact_path=str(Path(OUTLIER_ARTIFACT).parent))
        mlflow.set_tag(TAG_OUTLIERS_SHA256, sha256_file(detector_path))
    info = log_model(search.pipeline, train_X, settings)
    mlflow.set_tags({TAG_MODEL_URI: info.model_uri, TAG_MODEL_ID: info.model_id})
    return info
