"""The competing model pipelines.

Every candidate is an sklearn ``Pipeline([("encode", FeatureEncoder), (optional numeric steps),
("model", estimator)])`` (the contract :class:`churnops.scoring.Scorer` relies on):

- ``logistic_regression``: encoder -> ``StandardScaler`` -> ``LogisticRegression``
- ``random_forest``:       encoder -> ``RandomForestClassifier``
- ``xgboost``:             encoder -> ``xgboost.XGBClassifier(tree_method="hist")``

Hyper-parameters named in params.yaml ``train.search_spaces.<candidate>`` are the estimator's own
parameter names (``C``, ``max_depth``, ``scale_pos_weight``, ...).
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from churnops.features import FeatureEncoder
from churnops.settings import SchemaSettings

CANDIDATES: tuple[str, ...] = ("logistic_regression", "random_forest", "xgboost")
MODEL_STEP = "model"  # name of the estimator step in every pipeline


class UnknownCandidateError(ValueError):
    """A candidate name that this library does not build."""


class HyperParameterError(ValueError):
    """A hyper-parameter name or value the candidate's estimator does not accept; names the key."""


def _check(candidate: str) -> None:
    if candidate not in CANDIDATES:
        raise UnknownCandidateError(
            f"unknown candidate {candidate!r} (train.candidates): choose from {list(CANDIDATES)}"
        )


def make_estimator(candidate: str, *, seed: int = 42, n_jobs: int = 1) -> BaseEstimator:
    """The bare estimator of a candidate with its fixed (non-searched) settings."""
    _check(candidate)
    if candidate == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=5000, random_state=seed)
    if candidate == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs)
    from xgboost import XGBClassifier

    return XGBClassifier(tree_method="hist", random_state=seed, n_jobs=n_jobs, eval_metric="logloss")


def build_pipeline(
    candidate: str,
    schema: SchemaSettings,
    *,
    seed: int = 42,
    n_jobs: int = 1,
    params: dict[str, Any] | None = None,
) -> Pipeline:
    """An unfitted candidate pipeline for `schema`; `params` are estimator hyper-parameters (bare names)."""
    estimator = make_estimator(candidate, seed=seed, n_jobs=n_jobs)
    if params:
        check_hyperparameters(candidate, params, where=f"hyper-parameters of {candidate}")
        estimator.set_params(**params)
    steps: list[tuple[str, Any]] = [("encode", FeatureEncoder.from_schema(schema))]
    if candidate == "logistic_regression":
        from sklearn.preprocessing import StandardScaler

        steps.append(("scale", StandardScaler()))
    steps.append((MODEL_STEP, estimator))
    return Pipeline(steps)


def hyperparameter_names(candidate: str) -> set[str]:
    """The parameter names the candidate's estimator accepts."""
    return set(make_estimator(candidate).get_params(deep=False))


def check_hyperparameters(candidate: str, names: Any, *, where: str) -> None:
    """Raise HyperParameterError naming every key in `names` that the candidate's estimator lacks."""
    known = hyperparameter_names(candidate)
    unknown = sorted(set(names) - known)
    if unknown:
        raise HyperParameterError(
            f"{where}: unknown hyper-parameter(s) {unknown} for {candidate}; "
            f"the estimator accepts {sorted(known)}"
        )


def set_inference_threads(pipeline: Pipeline, n_jobs: int = 1) -> Pipeline:
    """Set the fitted estimator's prediction threads (serving scales with processes, one thread each)."""
    estimator = pipeline.steps[-1][1]
    if "n_jobs" in estimator.get_params(deep=False):
        estimator.set_params(n_jobs=n_jobs)
    return pipeline
