"""Train every candidate on the gold train split, evaluate on the hold-out, track it all in MLflow.

The entry point for the pipeline's train stage::

    result = train_candidates(train_df, test_df, settings, data_version=md5, git_commit=sha)
    result.best.run_id        # -> registry.register_best(settings, result, test_df)

Frames are the gold layer: the id column, the schema's feature columns and ``churn`` (0/1). The hold-out
(`test_df`) is used only for the reported hold-out metrics: hyper-parameters, the decision threshold
(out-of-fold) and the choice of the best candidate (mean CV score of ``train.scoring``) all come from the
training split. Nothing here touches the model registry, so a failed training run cannot move
``@champion``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.logs import get_logger
from churnops.models import LABEL_COLUMN
from churnops.settings import SchemaSettings, Settings

log = get_logger(__name__)


class TrainingDataError(ValueError):
    """A train/test frame does not match the data contract; the message names the frame and columns."""


@dataclass
class CandidateResult:
    """One candidate's outcome (its child run in MLflow)."""

    candidate: str
    run_id: str
    model_uri: str  # models:/m-<id> of the logged model (what registry.register() registers)
    threshold: float
    best_params: dict[str, Any]
    cv_metrics: dict[str, dict[str, float]]  # metric -> {"mean", "std"} over the CV folds
    oof_metrics: dict[str, float]  # out-of-fold metrics at the threshold
    holdout_metrics: dict[str, float]  # roc_auc, pr_auc, f1, precision, recall, accuracy on the hold-out
    confusion_matrix: list[list[int]]  # hold-out, [[tn, fp], [fn, tp]]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    """A whole training run (the MLflow parent run) and its candidates."""

    parent_run_id: str
    experiment_id: str
    candidates: list[CandidateResult]
    best_candidate: str
    selection_metric: str  # e.g. "cv_average_precision_mean": how the best candidate was chosen
    data_version: str
    git_commit: str
    params_hash: str
    seconds: float

    @property
    def best(self) -> CandidateResult:
        return self.candidate(self.best_candidate)

    def candidate(self, name: str) -> CandidateResult:
        for c in self.candidates:
            if c.candidate == name:
                return c
        known = [c.candidate for c in self.candidates]
        raise KeyError(f"no candidate {name!r} in this training run ({known})")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["best"] = self.best.to_dict()
        return doc


def split_features(
    frame: pd.DataFrame, schema: SchemaSettings, *, label: str = LABEL_COLUMN, source: str = "frame"
) -> tuple[pd.DataFrame, np.ndarray]:
    """(raw feature columns in schema order, 0/1 labels) of a gold frame; TrainingDataError if malformed."""
    missing = [c for c in [*schema.feature_columns, label] if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{source}: missing columns {missing} (expected the gold layer: "
                                f"{schema.id_column}, feature columns, {label!r})")
    if frame.empty:
        raise TrainingDataError(f"{source}: no rows")
    y = frame[label]
    if y.isna().any() or not set(pd.unique(y)) <= {0, 1}:
        bad = sorted({str(v) for v in pd.unique(y) if v not in (0, 1)})[:5]
        raise TrainingDataError(f"{source}: column {label!r} must hold 0/1 only, found {bad}")
    if y.nunique() < 2:
        raise TrainingDataError(f"{source}: column {label!r} holds a single class; need churned and not")
    nulls = [c for c in schema.feature_columns if c not in schema.missing and frame[c].isna().any()]
    if nulls:  # columns with a policy (schema.missing) are filled by the model's FeatureEncoder
        raise TrainingDataError(f"{source}: missing values in feature columns {nulls}, which have no "
                                f"missing-value policy (schema.missing; validate the data first)")
    return frame[schema.feature_columns], y.to_numpy(dtype=int)


def train_candidates(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    settings: Settings,
    data_version: str,
    git_commit: str,
    *,
    candidates: list[str] | None = None,
    run_name: str | None = None,
    reports_dir: Path | str | None = None,
) -> TrainingResult:
    """Search, evaluate and log every candidate under one MLflow parent run; see the module docstring.

    `candidates` defaults to ``train.candidates``. `reports_dir`, when given, receives
    ``<candidate>/{evaluation,plots,search}/...`` and ``training.json`` (written atomically) for DVC.
    The parent run ends FAILED (and the error propagates) if any candidate fails.
    """
    import mlflow

    from churnops.io import write_json_atomic
    from churnops.models.evaluation import evaluate, feature_importance
    from churnops.models.search import search_candidate
    from churnops.tracking import (
        TAG_CANDIDATE,
        TAG_DATA_VERSION,
        TAG_GIT_COMMIT,
        TAG_PARAMS_HASH,
        TAG_ROLE,
        configure_tracking,
        log_candidate_run,
    )

    train_cfg = settings.params.train
    names = list(candidates or train_cfg.candidates)
    train_X, train_y = split_features(train_df, settings.schema, source="train split")  # noqa: N806
    test_X, test_y = split_features(test_df, settings.schema, source="test split")  # noqa: N806
    experiment_id = configure_tracking(settings)
    reports = Path(reports_dir) if reports_dir is not None else None
    common_tags = {
        TAG_GIT_COMMIT: git_commit,
        TAG_DATA_VERSION: data_version,
        TAG_PARAMS_HASH: settings.params_hash,
    }
    selection = f"cv_{train_cfg.scoring}_mean"
    run_name = run_name or f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    start = time.perf_counter()
    results: list[CandidateResult] = []
    log.info("train.start", candidates=names, train_rows=len(train_X), test_rows=len(test_X),
             train_churn_rate=round(float(train_y.mean()), 4), data_version=data_version)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags={**common_tags, TAG_ROLE: "pipeline"}) as parent:
        mlflow.log_params({
            "candidates": ",".join(names),
            "cv_folds": train_cfg.cv_folds,
            "scoring": train_cfg.scoring,
            "seed": train_cfg.seed,
            "train_rows": len(train_X),
            "test_rows": len(test_X),
            "selection": selection,
        })
        for position, name in enumerate(names, start=1):
            with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True,
                                  tags={**common_tags, TAG_ROLE: "candidate", TAG_CANDIDATE: name}) as child:
                search = search_candidate(name, train_X, train_y, settings,
                                          position=f"{position}/{len(names)}")
                logged_at = time.perf_counter()
                evaluation = evaluate(search.pipeline, test_X, test_y, search.threshold)
                importance = feature_importance(search.pipeline)
                info = log_candidate_run(
                    search, evaluation, train_X=train_X, settings=settings, importance=importance,
                    artifact_dir=reports / name if reports is not None else None,
                )
                results.append(CandidateResult(
                    candidate=name,
                    run_id=child.info.run_id,
                    model_uri=info.model_uri,
                    threshold=search.threshold,
                    best_params=search.best_params,
                    cv_metrics=search.cv_metrics,
                    oof_metrics=search.oof_metrics,
                    holdout_metrics=evaluation.metrics,
                    confusion_matrix=evaluation.confusion_matrix,
                    seconds={**search.seconds, "evaluate_and_log": time.perf_counter() - logged_at},
                ))
                log.info("train.candidate", candidate=name, run_id=child.info.run_id,
                         threshold=round(search.threshold, 4),
                         **{f"test_{k}": round(v, 4) for k, v in evaluation.metrics.items()})
        best = max(results, key=lambda r: r.cv_metrics[train_cfg.scoring]["mean"])
        seconds = time.perf_counter() - start
        result = TrainingResult(
            parent_run_id=parent.info.run_id,
            experiment_id=experiment_id,
            candidates=results,
            best_candidate=best.candidate,
            selection_metric=selection,
            data_version=data_version,
            git_commit=git_commit,
            params_hash=settings.params_hash,
            seconds=seconds,
        )
        mlflow.set_tags({"best_candidate": best.candidate, "best_run_id": best.run_id})
        mlflow.log_metrics({f"best_test_{k}": v for k, v in best.holdout_metrics.items()})
        mlflow.log_metric("training_seconds", seconds)
        mlflow.log_dict(result.to_dict(), "training.json")
        if reports is not None:
            write_json_atomic(reports / "training.json", result.to_dict())
    log.info("train.done", best=best.candidate, parent_run_id=result.parent_run_id, seconds=round(seconds, 1),
             **{f"best_test_{k}": round(v, 4) for k, v in best.holdout_metrics.items()})
    return result
