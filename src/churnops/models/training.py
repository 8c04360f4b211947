"""Train every candidate on the gold train split, evaluate on the hold-out, track it all in MLflow.

The entry point for the pipeline's train stage::

    result = train_candidates(train_df, test_df, settings, data_version=md5, git_commit=sha)
    result.best.run_id        # -> registry.register_best(settings, result, test_df)

Frames are the gold layer: the id column, the schema's feature columns and ``churn`` (0/1). The hold-out
(`test_df`) is used only for the reported hold-out metrics: hyper-parameters, the decision threshold
(out-of-fold) and the choice of the best candidate (mean CV score of ``train.scoring``) all come from the
training split. Nothing here touches the model registry, so a failed training run cannot move
``@champion``.

The same run in three parts, for an orchestrator that trains the candidates on different workers (Airflow's
``churn_training`` maps one task per candidate): :func:`start_training` opens the MLflow parent run and
returns its id, :func:`train_candidate` trains one candidate as a child run (its result travels as the
child run's artifact ``candidate_result.json``, never through the orchestrator), and
:func:`finish_training` gathers the finished children (:func:`collect_candidates`), picks the best and closes
the parent run. :func:`train_candidates` is those three in one process.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
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
    failed_candidates: list[str] = field(default_factory=list)  # configured, but no finished child run

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


CANDIDATE_ARTIFACT = "candidate_result.json"  # a child run's CandidateResult (what the gathering reads)


class NoCandidateFinishedError(RuntimeError):
    """Every candidate of a training run failed: nothing to choose from."""


def _tags(data_version: str, git_commit: str, settings: Settings) -> dict[str, str]:
    from churnops.tracking import TAG_DATA_VERSION, TAG_GIT_COMMIT, TAG_PARAMS_HASH

    return {TAG_GIT_COMMIT: git_commit, TAG_DATA_VERSION: data_version, TAG_PARAMS_HASH: settings.params_hash}


def start_training(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    settings: Settings,
    data_version: str,
    git_commit: str,
    *,
    candidates: list[str] | None = None,
    run_name: str | None = None,
) -> str:
    """Check the frames and open the MLflow parent run (left RUNNING); returns its id."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from churnops.tracking import TAG_ROLE, configure_tracking

    train_cfg = settings.params.train
    names = list(candidates or train_cfg.candidates)
    train_X, train_y = split_features(train_df, settings.schema, source="train split")  # noqa: N806
    test_X, _ = split_features(test_df, settings.schema, source="test split")  # noqa: N806
    experiment_id = configure_tracking(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    parent = client.create_run(experiment_id, run_name=run_name or f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}",
                               tags={**_tags(data_version, git_commit, settings), TAG_ROLE: "pipeline"})
    params = {"candidates": ",".join(names), "cv_folds": train_cfg.cv_folds, "scoring": train_cfg.scoring,
              "seed": train_cfg.seed, "train_rows": len(train_X), "test_rows": len(test_X),
              "selection": f"cv_{train_cfg.scoring}_mean", "search_max_rows": train_cfg.search.max_rows}
    client.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    log.info("train.start", candidates=names, train_rows=len(train_X), test_rows=len(test_X),
             train_churn_rate=round(float(train_y.mean()), 4), data_version=data_version,
             parent_run_id=parent.info.run_id)
    return parent.info.run_id


def train_candidate(
    name: str,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    settings: Settings,
    parent_run_id: str,
    data_version: str,
    git_commit: str,
    *,
    position: str = "",
    reports_dir: Path | str | None = None,
) -> CandidateResult:
    """Search, refit, evaluate and log one candidate as a child run of `parent_run_id`.

    The child run ends FAILED (and the error propagates) if the candidate fails."""
    import mlflow

    from churnops.models.candidate_run import log_candidate_run
    from churnops.models.evaluation import evaluate, feature_importance
    from churnops.models.search import search_candidate
    from churnops.tracking import TAG_CANDIDATE, TAG_ROLE, configure_tracking

    train_X, train_y = split_features(train_df, settings.schema, source="train split")  # noqa: N806
    test_X, test_y = split_features(test_df, settings.schema, source="test split")  # noqa: N806
    experiment_id = configure_tracking(settings)
    reports = Path(reports_dir) if reports_dir is not None else None
    tags = {**_tags(data_version, git_commit, settings), TAG_ROLE: "candidate", TAG_CANDIDATE: name}
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent_run_id,
                          nested=mlflow.active_run() is not None, tags=tags) as child:
        search = search_candidate(name, train_X, train_y, settings, position=position)
        logged_at = time.perf_counter()
        evaluation = evaluate(search.pipeline, test_X, test_y, search.threshold)
        importance = feature_importance(search.pipeline)
        info = log_candidate_run(
            search, evaluation, train_X=train_X, settings=settings, importance=importance,
            artifact_dir=reports / name if reports is not None else None,
        )
        result = CandidateResult(
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
        )
        mlflow.log_dict(result.to_dict(), CANDIDATE_ARTIFACT)
    log.info("train.candidate", candidate=name, run_id=result.run_id, threshold=round(search.threshold, 4),
             **{f"test_{k}": round(v, 4) for k, v in evaluation.metrics.items()})
    return result


def collect_candidates(settings: Settings, parent_run_id: str) -> list[CandidateResult]:
    """The finished child runs of `parent_run_id`, read back from the MLflow store (oldest first)."""
    from mlflow import MlflowClient

    from churnops.tracking import TAG_ROLE

    client = MlflowClient(settings.mlflow_tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.{TAG_ROLE} = 'candidate' "
                      f"and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    known = {f.name for f in fields(CandidateResult)}
    results: dict[str, CandidateResult] = {}
    for run in children:  # a retried candidate that finished twice: the later run counts
        doc = _load_json_artifact(client, run.info.run_id, CANDIDATE_ARTIFACT)
        result = CandidateResult(**{k: v for k, v in doc.items() if k in known})
        results[result.candidate] = result
    return list(results.values())


def _load_json_artifact(client: Any, run_id: str, path: str) -> dict[str, Any]:
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="churnops-candidate-") as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())


def finish_training(
    settings: Settings,
    parent_run_id: str,
    results: list[CandidateResult],
    data_version: str,
    git_commit: str,
    *,
    candidates: list[str] | None = None,
    reports_dir: Path | str | None = None,
) -> TrainingResult:
    """Pick the best of `results` (mean CV ``train.scoring``), record it on the parent run and close it.

    Configured candidates without a result are listed as ``failed_candidates`` (the run goes on with the
    others); with no result at all the parent run ends FAILED and NoCandidateFinishedError is raised."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from churnops.io import write_json_atomic

    train_cfg = settings.params.train
    names = list(candidates or train_cfg.candidates)
    client = MlflowClient(settings.mlflow_tracking_uri)
    parent = client.get_run(parent_run_id)
    failed = [n for n in names if n not in {r.candidate for r in results}]
    if not results:
        client.set_terminated(parent_run_id, "FAILED")
        raise NoCandidateFinishedError(f"no candidate of training run {parent_run_id} finished "
                                       f"(configured: {names}); see the candidates' task logs")
    results = sorted(results, key=lambda r: names.index(r.candidate) if r.candidate in names else len(names))
    best = max(results, key=lambda r: r.cv_metrics[train_cfg.scoring]["mean"])
    seconds = time.time() - parent.info.start_time / 1000
    result = TrainingResult(
        parent_run_id=parent_run_id,
        experiment_id=parent.info.experiment_id,
        candidates=results,
        best_candidate=best.candidate,
        selection_metric=f"cv_{train_cfg.scoring}_mean",
        data_version=data_version,
        git_commit=git_commit,
        params_hash=settings.params_hash,
        seconds=seconds,
        failed_candidates=failed,
    )
    now = int(time.time() * 1000)
    tags = {"best_candidate": best.candidate, "best_run_id": best.run_id}
    if failed:
        tags["failed_candidates"] = ",".join(failed)
        log.warning("train.candidates_failed", failed=failed, finished=[r.candidate for r in results],
                    parent_run_id=parent_run_id)
    metrics = {f"best_test_{k}": v for k, v in best.holdout_metrics.items()} | {"training_seconds": seconds}
    client.log_batch(parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_dict(parent_run_id, result.to_dict(), "training.json")
    if reports_dir is not None:
        write_json_atomic(Path(reports_dir) / "training.json", result.to_dict())
    client.set_terminated(parent_run_id, "FINISHED")
    log.info("train.done", best=best.candidate, parent_run_id=parent_run_id, seconds=round(seconds, 1),
             failed=failed or None,
             **{f"best_test_{k}": round(v, 4) for k, v in best.holdout_metrics.items()})
    return result


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
    from mlflow import MlflowClient

    names = list(candidates or settings.params.train.candidates)
    parent_run_id = start_training(train_df, test_df, settings, data_version, git_commit, candidates=names,
                                   run_name=run_name)
    results: list[CandidateResult] = []
    try:
        for position, name in enumerate(names, start=1):
            results.append(train_candidate(name, train_df, test_df, settings, parent_run_id, data_version,
                                           git_commit, position=f"{position}/{len(names)}",
                                           reports_dir=reports_dir))
    except BaseException:
        MlflowClient(settings.mlflow_tracking_uri).set_terminated(parent_run_id, "FAILED")
        raise
    return finish_training(settings, parent_run_id, results, data_version, git_commit, candidates=names,
                           reports_dir=reports_dir)
