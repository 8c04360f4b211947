"""Hyper-parameter search and decision-threshold choice for one candidate, at a cost that grows with the data
no faster than the data.

Search spaces come from params.yaml ``train.search_spaces.<candidate>``; each hyper-parameter maps to one
spec form:

- ``{log_uniform: [a, b]}``: ``scipy.stats.loguniform(a, b)``, 0 < a < b (``C: {log_uniform: [0.01, 100]}``)
- ``{uniform: [a, b]}``: ``scipy.stats.uniform(a, b - a)``, a < b (``subsample: {uniform: [0.7, 1.0]}``)
- ``{int_uniform: [a, b]}``: integers a..b inclusive, ``scipy.stats.randint(a, b + 1)``
- ``{choice: [v, ...]}``: one of the listed values, ``null`` = None (``{choice: [balanced, null]}``)

:func:`search_candidate` (budget: params.yaml ``train.search`` and ``train.search_iterations``):

1. Row sample: the search sees a stratified sample of at most ``search.max_rows`` training rows (all of them
   when there are fewer), so its cost stops growing with the data.
2. Successive halving over ``search_iterations[candidate]`` settings drawn by scikit-learn's
   ``ParameterSampler``: round 1 scores every setting by ``StratifiedKFold(cv_folds, shuffle=True,
   random_state=seed)`` CV on a stratified 1/factor^(rounds-1) of the sample (at least ``search.min_rows``),
   each next round keeps the best 1/``halving_factor`` (by ``train.scoring``) on factor times the rows, and
   the last round scores the survivors on the whole sample. A budget of at most ``halving_factor`` settings is
   one round: a plain randomized search.
3. XGBoost stops adding trees when the validation fold's ``train.scoring`` (``aucpr`` for
   average_precision, ``auc`` for roc_auc, else log-loss) has not improved for
   ``search.early_stopping_rounds`` trees; the searched ``n_estimators`` is the cap, and the refit grows
   the mean number of trees the best setting's last-round folds kept.
4. Threshold: the best setting's out-of-fold probabilities of the last round (the same folds it was scored on)
   choose the decision threshold (F1 of the churn class).
5. Refit of the best setting on *all* training rows. The random forest's trees each draw at most
   ``search.max_rows`` rows (``max_samples``) when there are more: trees of the size the search tuned, at a
   cost that stops growing with the data (the forest costs the most per fit and has never won on the
   reference table).

Progress (candidate, round, setting i of n, elapsed and estimated time) is logged while it runs. The hold-out
split is never seen here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
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
# XGBoost's early stopping watches the metric the search optimises (train.scoring); log-loss for f1. On the
# reference table, stopping on log-loss chose settings with hold-out churn F1 0.907-0.909 (RESULTS.md).
EARLY_STOPPING_METRIC = {"average_precision": "aucpr", "roc_auc": "auc"}


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
    best_params: dict[str, Any]  # bare estimator names (C, max_depth, ...) as refitted
    cv_metrics: dict[str, dict[str, float]]  # metric -> {"mean", "std"} of the best setting over the folds
    threshold: float
    oof_proba: np.ndarray  # out-of-fold churn probabilities of the best setting (search rows' order)
    oof_metrics: dict[str, float]  # metrics of the OOF probabilities at `threshold`
    cv_results: pd.DataFrame  # one row per sampled setting (its last round), best first
    n_iter: int
    cv_folds: int
    scoring: str
    search_rows: int = 0  # training rows the search's last round saw (all, or the stratified sample)
    rounds: int = 1  # successive-halving rounds
    seconds: dict[str, float] = field(default_factory=dict)  # search, refit


def _cv(settings: Settings, n_splits: int | None = None) -> Any:
    from sklearn.model_selection import StratifiedKFold

    train = settings.params.train
    return StratifiedKFold(n_splits=n_splits or train.cv_folds, shuffle=True, random_state=train.seed)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (for JSON, MLflow params and set_params)."""
    return value.item() if isinstance(value, np.generic) else value


def release_worker_processes() -> None:
    """Stop joblib's reusable worker processes (the searches' ``n_jobs``) now.

    Left alone they idle for five minutes after the last search; an Airflow task process exits without the
    interpreter's teardown, so they would outlive it as orphans holding a few hundred MB each."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of a stratified sample of `n` of the labels `y` (all positions when n >= len(y))."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(keep)


def halving_plan(n_settings: int, rows: int, factor: int, min_rows: int) -> list[tuple[int, int]]:
    """[(settings, rows)] per successive-halving round: each round keeps ceil(1/factor) of the settings on
    factor times the rows; the last round has at most `factor` settings on all `rows`."""
    rounds = 1
    while math.ceil(n_settings / factor ** (rounds - 1)) > factor:
        rounds += 1
    plan = []
    for k in range(rounds):
        keep = math.ceil(n_settings / factor**k)
        n_rows = rows if k == rounds - 1 else max(min(min_rows, rows), rows // factor ** (rounds - 1 - k))
        plan.append((keep, n_rows))
    return plan


@dataclass
class _Fold:
    """One CV fold of one round, encoded once for every setting (the encoder does not depend on them)."""

    X_fit: Any  # noqa: N815
    y_fit: np.ndarray
    X_val: Any  # noqa: N815
    y_val: np.ndarray
    val_positions: np.ndarray  # positions in the round's rows


@dataclass
class _FitResult:
    setting: int
    fold: int
    rows: int
    proba: np.ndarray  # churn probabilities of the fold's validation rows
    best_iteration: int | None
    seconds: float


def _fit_fold(candidate: str, settings: Settings, params: dict[str, Any], fold: _Fold, setting: int,
              fold_no: int) -> _FitResult:
    """Fit the model step of one setting on one encoded fold; XGBoost stops early on the validation fold."""
    start = time.perf_counter()
    estimator = build_pipeline(candidate, settings.schema, seed=settings.params.train.seed, n_jobs=1,
                               params=params).steps[-1][1]
    best_iteration = None
    if candidate == "xgboost":
        estimator.set_params(early_stopping_rounds=settings.params.train.search.early_stopping_rounds,
                             eval_metric=EARLY_STOPPING_METRIC.get(settings.params.train.scoring, "logloss"))
        estimator.fit(fold.X_fit, fold.y_fit, eval_set=[(fold.X_val, fold.y_val)], verbose=False)
        best_iteration = int(estimator.best_iteration)
    else:
        estimator.fit(fold.X_fit, fold.y_fit)
    proba = estimator.predict_proba(fold.X_val)[:, 1]
    return _FitResult(setting, fold_no, len(fold.y_fit), proba, best_iteration, time.perf_counter() - start)


def _encode_folds(candidate: str, X: pd.DataFrame, y: np.ndarray, settings: Settings) -> list[_Fold]:  # noqa: N803
    """The round's CV folds with the pipeline's preprocessing (encoder, scaler) fitted on each fold's rows."""
    folds = []
    for fit_idx, val_idx in _cv(settings).split(X, y):
        prep = build_pipeline(candidate, settings.schema, seed=settings.params.train.seed)[:-1]
        X_fit = prep.fit_transform(X.iloc[fit_idx], y[fit_idx])  # noqa: N806
        folds.append(_Fold(X_fit, y[fit_idx], prep.transform(X.iloc[val_idx]), y[val_idx], val_idx))
    return folds


def _fold_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    return {"roc_auc": float(roc_auc_score(y, proba)),
            "average_precision": float(average_precision_score(y, proba)),
            "f1": float(f1_score(y, (proba > 0.5).astype(int), zero_division=0))}


@dataclass
class _Halving:
    """The search's state while successive halving runs (filled by :meth:`run`, read afterwards)."""

    candidate: str
    X: pd.DataFrame  # noqa: N815  (the search rows)
    y: np.ndarray
    settings: Settings
    sampled: list[dict[str, Any]]  # bare-named settings
    plan: list[tuple[int, int]]
    scores: dict[int, dict[str, Any]] = field(default_factory=dict)  # setting -> its last round's record
    last_fits: dict[int, list[_FitResult]] = field(default_factory=dict)  # setting -> last-round fits
    final_folds: list[np.ndarray] = field(default_factory=list)  # validation positions of the last round

    @property
    def n_fits(self) -> int:
        return sum(keep for keep, _ in self.plan) * self.settings.params.train.cv_folds

    @property
    def total_rows_fitted(self) -> float:
        return float(sum(keep * rows for keep, rows in self.plan) * self.settings.params.train.cv_folds)

    def run(self) -> Iterator[tuple[int, int, _FitResult]]:
        """Yield (round, rank of the setting in the round, fit) as each fold fit finishes."""
        from joblib import Parallel, delayed

        train = self.settings.params.train
        alive = list(range(len(self.sampled)))
        for round_no, (keep, n_rows) in enumerate(self.plan, start=1):
            alive = alive[:keep]
            positions = stratified_sample(self.y, n_rows, train.seed + round_no)
            X_round, y_round = self.X.iloc[positions], self.y[positions]  # noqa: N806
            folds = _encode_folds(self.candidate, X_round, y_round, self.settings)
            fits: dict[int, list[_FitResult]] = {s: [] for s in alive}
            jobs = (delayed(_fit_fold)(self.candidate, self.settings, self.sampled[s], fold, s, f)
                    for s in alive for f, fold in enumerate(folds))
            for fit in Parallel(n_jobs=train.n_jobs, return_as="generator_unordered")(jobs):
                fits[fit.setting].append(fit)
                yield round_no, alive.index(fit.setting) + 1, fit
            for s in alive:
                per_fold = [_fold_scores(folds[f.fold].y_val, f.proba) for f in fits[s]]
                self.scores[s] = {
                    "round": round_no, "rows": n_rows,
                    **{f"{m}_mean": float(np.mean([d[m] for d in per_fold])) for m in CV_METRICS},
                    **{f"{m}_std": float(np.std([d[m] for d in per_fold])) for m in CV_METRICS},
                    "fit_time_s": float(np.mean([f.seconds for f in fits[s]])),
                }
                if round_no == len(self.plan):
                    self.last_fits[s] = sorted(fits[s], key=lambda f: f.fold)
            alive.sort(key=lambda s: -self.scores[s][f"{train.scoring}_mean"])  # stable: ties keep draw order
        self.final_folds = [fold.val_positions for fold in folds]

    def ranked(self) -> list[int]:
        """Settings best first: later rounds before earlier ones, then by the CV score."""
        scoring = self.settings.params.train.scoring
        return sorted(
            self.scores, key=lambda s: (-self.scores[s]["round"], -self.scores[s][f"{scoring}_mean"])
        )

    def results_table(self) -> pd.DataFrame:
        rows = []
        for rank, s in enumerate(self.ranked(), start=1):
            rows.append({"rank": rank, **self.sampled[s], **self.scores[s]})
        return pd.DataFrame(rows)


def _refit_params(candidate: str, best: dict[str, Any], fits: list[_FitResult], n_rows: int,
                  settings: Settings) -> dict[str, Any]:
    """The best setting as refitted on all `n_rows`: XGBoost's trees as the folds kept them (early stopping),
    the forest's trees drawing at most ``search.max_rows`` rows each."""
    params = dict(best)
    if candidate == "xgboost":
        params["n_estimators"] = max(1, round(float(np.mean([f.best_iteration + 1 for f in fits]))))
    max_rows = settings.params.train.search.max_rows
    if candidate == "random_forest" and n_rows > max_rows and params.get("max_samples") is None:
        params["max_samples"] = max_rows
    return params


def search_candidate(candidate: str, X: pd.DataFrame, y: Any, settings: Settings,  # noqa: N803
                     *, position: str = "") -> SearchResult:
    """Sampled rows, successive halving, OOF threshold, refit on all rows: see the module docstring.

    `position` (``"2/3"``) says which candidate of the run this is, in the progress lines."""
    from sklearn.model_selection import ParameterSampler

    from churnops.logs import progress
    from churnops.models.evaluation import classification_metrics

    train = settings.params.train
    if candidate not in train.search_spaces:
        raise SearchSpaceError(f"train.search_spaces.{candidate}: missing (every candidate needs a space)")
    space = parse_space(candidate, train.search_spaces[candidate])
    n_iter = int(train.search_iterations[candidate])
    y = np.asarray(y).astype(int)
    rows = stratified_sample(y, train.search.max_rows, train.seed)
    X_search, y_search = X.iloc[rows].reset_index(drop=True), y[rows]  # noqa: N806
    sampled = [{k.removeprefix(f"{MODEL_STEP}__"): _plain(v) for k, v in p.items()}
               for p in ParameterSampler(space, n_iter, random_state=train.seed)]
    plan = halving_plan(len(sampled), len(rows), train.search.halving_factor, train.search.min_rows)
    halving = _Halving(candidate, X_search, y_search, settings, sampled, plan)
    seconds: dict[str, float] = {}

    log.info("search.start", candidate=candidate, position=position or None, settings=len(sampled),
             rounds=[f"{keep}x{n}" for keep, n in plan], cv_folds=train.cv_folds, rows=len(X),
             search_rows=len(rows), scoring=train.scoring, n_jobs=train.n_jobs)
    start = time.perf_counter()
    total = len(sampled)

    def describe(item: tuple[int, int, _FitResult]) -> dict[str, Any]:
        round_no, rank, fit = item
        return {"candidate": candidate, "position": position or None, "round": f"{round_no}/{len(plan)}",
                "setting": f"{rank}/{plan[round_no - 1][0]}", "of_settings": total, "fold": fit.fold + 1,
                "rows": fit.rows}

    for _ in progress(halving.run(), task=f"search {candidate}", total=halving.n_fits,
                      cost=lambda item: float(item[2].rows), total_cost=halving.total_rows_fitted
                      * (train.cv_folds - 1) / train.cv_folds, fields=describe):
        pass
    seconds["search"] = time.perf_counter() - start
    best_setting = halving.ranked()[0]
    record = halving.scores[best_setting]
    cv_metrics = {m: {"mean": record[f"{m}_mean"], "std": record[f"{m}_std"]} for m in CV_METRICS}

    last = halving.last_fits[best_setting]
    oof = np.empty(len(y_search))
    for fit, val_positions in zip(last, halving.final_folds, strict=True):
        oof[val_positions] = fit.proba
    if settings.params.evaluate.tune_threshold:
        threshold, _ = choose_threshold(y_search, oof)
    else:
        threshold = 0.5
    oof_metrics = classification_metrics(y_search, oof, threshold)
    best_params = _refit_params(candidate, halving.sampled[best_setting], last, len(X), settings)
    log.info("search.done", candidate=candidate, seconds=round(seconds["search"], 1), settings=total,
             best=best_params, threshold=round(threshold, 4), oof_f1=round(oof_metrics["f1"], 4),
             **{f"cv_{train.scoring}": round(cv_metrics[train.scoring]["mean"], 4)})

    start = time.perf_counter()
    # XGBoost's OpenMP threads spin-wait: on a shared machine under load ~8, the two-thread refit took 64 s
    # where single-threaded fits of that size took ~4 s. The forest's joblib threads do not suffer from it.
    refit_jobs = 1 if candidate == "xgboost" else train.n_jobs
    pipeline = build_pipeline(candidate, settings.schema, seed=train.seed, n_jobs=refit_jobs,
                              params=best_params).fit(X, y)
    set_inference_threads(pipeline, 1)
    seconds["refit"] = time.perf_counter() - start
    log.info("search.refit", candidate=candidate, rows=len(X), seconds=round(seconds["refit"], 1))
    return SearchResult(
        candidate=candidate,
        pipeline=pipeline,
        best_params=best_params,
        cv_metrics=cv_metrics,
        threshold=threshold,
        oof_proba=oof,
        oof_metrics=oof_metrics,
        cv_results=halving.results_table(),
        n_iter=n_iter,
        cv_folds=train.cv_folds,
        scoring=train.scoring,
        search_rows=len(rows),
        rounds=len(plan),
        seconds=seconds,
    )
