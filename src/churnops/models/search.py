"""Hyper-parameter search and decision-threshold choice for one candidate.

Search spaces come from params.yaml ``train.search_spaces.<candidate>``; each hyper-parameter maps to one
spec form:

- ``{log_uniform: [a, b]}``: ``scipy.stats.loguniform(a, b)``, 0 < a < b (``C: {log_uniform: [0.01, 100]}``)
- ``{uniform: [a, b]}``: ``scipy.stats.uniform(a, b - a)``, a < b (``subsample: {uniform: [0.7, 1.0]}``)
- ``{int_uniform: [a, b]}``: integers a..b inclusive, ``scipy.stats.randint(a, b + 1)``
- ``{choice: [v, ...]}``: one of the listed values, ``null`` = None (``{choice: [balanced, null]}``)

:func:`search_candidate` runs ``RandomizedSearchCV`` (``train.search_iterations[candidate]`` settings, each
scored by ``StratifiedKFold(train.cv_folds, shuffle=True, random_state=train.seed)``, optimising
``train.scoring``), then computes out-of-fold probabilities of the best setting on the *same* folds and
chooses the decision threshold on them (F1 of the churn class), then refits the best setting on the whole
training split. The hold-out split is never seen here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from churnops.logs import get_logger
from churnops.models.candidates import (
    MODEL_STEP,
    HyperParameterError,
    build_pipeline,
    check_hyperparameters,
    set_inference_threads,
)
from churnops.settings import Settings

log = get_logger(__name__)

SPEC_FORMS = ("log_uniform", "uniform", "int_uniform", "choice")
CV_METRICS = ("roc_auc", "average_precision", "f1")  # scored for every sampled setting


class SearchSpaceError(HyperParameterError):
    """A search-space entry in params.yaml is malformed; the message names the key."""


# -- search spaces -------------------------------------------------------------------------------
def _bounds(value: Any, key: str, form: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise SearchSpaceError(f"{key}: {form} needs two numbers [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise SearchSpaceError(f"{key}: {form} needs finite low < high, got {value!r}")
    return low, high


def parse_spec(spec: Any, *, key: str) -> Any:
    """One hyper-parameter spec -> a scipy distribution (``.rvs``) or a list of choices.

    `key` is the dotted params path used in error messages (``train.search_spaces.xgboost.max_depth``).
    """
    from scipy import stats

    if not isinstance(spec, dict) or len(spec) != 1:
        raise SearchSpaceError(
            f"{key}: expected a mapping with exactly one of {list(SPEC_FORMS)}, got {spec!r} "
            f"(a fixed value is written {{choice: [value]}})"
        )
    form, value = next(iter(spec.items()))
    if form == "choice":
        if not isinstance(value, list) or not value:
            raise SearchSpaceError(f"{key}: choice needs a non-empty list of values, got {value!r}")
        return list(value)
    if form == "log_uniform":
        low, high = _bounds(value, key, form)
        if low <= 0:
            raise SearchSpaceError(f"{key}: log_uniform needs 0 < low, got {value!r}")
        return stats.loguniform(low, high)
    if form == "uniform":
        low, high = _bounds(value, key, form)
        return stats.uniform(loc=low, scale=high - low)
    if form == "int_uniform":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (value or [])):
            raise SearchSpaceError(f"{key}: int_uniform needs two integers [low, high], got {value!r}")
        low, high = _bounds(value, key, form)
        return stats.randint(int(low), int(high) + 1)  # inclusive upper bound
    raise SearchSpaceError(f"{key}: unknown search spec form {form!r}; use one of {list(SPEC_FORMS)}")


def parse_space(candidate: str, space: dict[str, Any], *, where: str | None = None) -> dict[str, Any]:
    """A candidate's search space -> ``{"model__<name>": distribution or list}`` for RandomizedSearchCV.

    Unknown hyper-parameter names and malformed specs raise :class:`SearchSpaceError` naming the key.
    """
    where = where or f"train.search_spaces.{candidate}"
    if not isinstance(space, dict) or not space:
        raise SearchSpaceError(f"{where}: expected a non-empty mapping of hyper-parameter -> spec")
    try:
        check_hyperparameters(candidate, space, where=where)
    except HyperParameterError as exc:
        raise SearchSpaceError(str(exc)) from exc
    return {f"{MODEL_STEP}__{name}": parse_spec(spec, key=f"{where}.{name}") for name, spec in space.items()}


# -- threshold -----------------------------------------------------------------------------------
def choose_threshold(y_true: Any, proba: Any) -> tuple[float, float]:
    """(threshold, f1): the threshold maximising churn-class F1 for ``churn if proba >= threshold``."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        raise ValueError("choosing a threshold needs both classes in the labels")
    precision, recall, thresholds = precision_recall_curve(y, np.asarray(proba, dtype=float))
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


# -- the search ----------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """One candidate after search, threshold choice and refit on the whole training split."""

    candidate: str
    pipeline: Pipeline  # fitted on the whole training split with the best hyper-parameters
    best_params: dict[str, Any]  # bare estimator names (C, max_depth, ...)
    cv_metrics: dict[str, dict[str, float]]  # metric -> {"mean", "std"} of the best setting over the folds
    threshold: float
    oof_proba: np.ndarray  # out-of-fold churn probabilities of the best setting (training rows' order)
    oof_metrics: dict[str, float]  # metrics of the OOF probabilities at `threshold`
    cv_results: pd.DataFrame  # one row per sampled setting, best first
    n_iter: int
    cv_folds: int
    scoring: str
    seconds: dict[str, float] = field(default_factory=dict)  # search, oof, refit


def _cv(settings: Settings) -> Any:
    from sklearn.model_selection import StratifiedKFold

    train = settings.params.train
    return StratifiedKFold(n_splits=train.cv_folds, shuffle=True, random_state=train.seed)


def _results_table(cv_results: dict[str, Any], scoring: str) -> pd.DataFrame:
    rows = []
    for i, params in enumerate(cv_results["params"]):
        row: dict[str, Any] = {"rank": int(cv_results[f"rank_test_{scoring}"][i])}
        row.update({k.removeprefix(f"{MODEL_STEP}__"): _plain(v) for k, v in params.items()})
        for m in CV_METRICS:
            row[f"{m}_mean"] = float(cv_results[f"mean_test_{m}"][i])
            row[f"{m}_std"] = float(cv_results[f"std_test_{m}"][i])
        row["fit_time_s"] = float(cv_results["mean_fit_time"][i])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("rank", kind="stable").reset_index(drop=True)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (for JSON, MLflow params and set_params)."""
    return value.item() if isinstance(value, np.generic) else value


def release_worker_processes() -> None:
    """Stop joblib's reusable worker processes (the searches' ``n_jobs``) now.

    Left alone they idle for five minutes after the last search; an Airflow task process exits without the
    interpreter's teardown, so they would outlive it as orphans holding a few hundred MB each."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def search_candidate(candidate: str, X: pd.DataFrame, y: Any, settings: Settings) -> SearchResult:  # noqa: N803
    """Randomized CV search, OOF threshold, refit: see the module docstring."""
    from sklearn.model_selection import RandomizedSearchCV, cross_val_predict

    from churnops.models.evaluation import classification_metrics

    train = settings.params.train
    if candidate not in train.search_spaces:
        raise SearchSpaceError(f"train.search_spaces.{candidate}: missing (every candidate needs a space)")
    space = parse_space(candidate, train.search_spaces[candidate])
    n_iter = int(train.search_iterations[candidate])
    y = np.asarray(y).astype(int)
    cv = _cv(settings)
    seconds: dict[str, float] = {}

    log.info("search.start", candidate=candidate, n_iter=n_iter, cv_folds=train.cv_folds, rows=len(X),
             scoring=train.scoring, n_jobs=train.n_jobs)
    start = time.perf_counter()
    search = RandomizedSearchCV(
        build_pipeline(candidate, settings.schema, seed=train.seed, n_jobs=1),
        space,
        n_iter=n_iter,
        scoring=list(CV_METRICS),
        refit=False,
        cv=cv,
        n_jobs=train.n_jobs,
        random_state=train.seed,
        error_score="raise",
    )
    search.fit(X, y)
    seconds["search"] = time.perf_counter() - start
    res = search.cv_results_
    best_index = int(np.flatnonzero(res[f"rank_test_{train.scoring}"] == 1)[0])
    best_params = {
        k.removeprefix(f"{MODEL_STEP}__"): _plain(v) for k, v in res["params"][best_index].items()
    }
    cv_metrics = {
        m: {"mean": float(res[f"mean_test_{m}"][best_index]), "std": float(res[f"std_test_{m}"][best_index])}
        for m in CV_METRICS
    }
    log.info("search.done", candidate=candidate, seconds=round(seconds["search"], 1),
             settings=len(res["params"]), best=best_params,
             **{f"cv_{train.scoring}": round(cv_metrics[train.scoring]["mean"], 4)})

    start = time.perf_counter()
    oof = cross_val_predict(
        build_pipeline(candidate, settings.schema, seed=train.seed, n_jobs=1, params=best_params),
        X, y, cv=cv, method="predict_proba", n_jobs=train.n_jobs,
    )[:, 1]
    seconds["oof"] = time.perf_counter() - start
    if settings.params.evaluate.tune_threshold:
        threshold, _ = choose_threshold(y, oof)
    else:
        threshold = 0.5
    oof_metrics = classification_metrics(y, oof, threshold)

    start = time.perf_counter()
    # XGBoost's OpenMP threads spin-wait: on a shared machine under load ~8, the two-thread refit took 64 s
    # where single-threaded fits of that size took ~4 s. The forest's joblib threads do not suffer from it.
    refit_jobs = 1 if candidate == "xgboost" else train.n_jobs
    pipeline = build_pipeline(candidate, settings.schema, seed=train.seed, n_jobs=refit_jobs,
                              params=best_params).fit(X, y)
    set_inference_threads(pipeline, 1)
    seconds["refit"] = time.perf_counter() - start
    log.info("search.threshold", candidate=candidate, threshold=round(threshold, 4),
             oof_f1=round(oof_metrics["f1"], 4), oof_seconds=round(seconds["oof"], 1),
             refit_seconds=round(seconds["refit"], 1))
    return SearchResult(
        candidate=candidate,
        pipeline=pipeline,
        best_params=best_params,
        cv_metrics=cv_metrics,
        threshold=threshold,
        oof_proba=oof,
        oof_metrics=oof_metrics,
        cv_results=_results_table(res, train.scoring),
        n_iter=n_iter,
        cv_folds=train.cv_folds,
        scoring=train.scoring,
        seconds=seconds,
    )
