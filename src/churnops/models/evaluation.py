"""Hold-out evaluation of a fitted candidate, for the churn class (label 1).

The decision rule everywhere in churnops is ``churn if probability >= threshold``.

Metrics (keys of :func:`classification_metrics`): ``roc_auc``, ``pr_auc`` (average precision), ``f1``,
``precision``, ``recall``, ``accuracy``. ``train.scoring`` / ``register.metric`` may say
``average_precision``: :func:`metric_key` maps it to ``pr_auc``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

HOLDOUT_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy")
_ALIASES = {"average_precision": "pr_auc"}


def metric_key(name: str) -> str:
    """A settings metric name (``roc_auc``, ``average_precision``, ``f1``, ...) -> hold-out metric key."""
    key = _ALIASES.get(name, name)
    if key not in HOLDOUT_METRICS:
        raise ValueError(f"unknown metric {name!r}: choose from {list(HOLDOUT_METRICS)} or average_precision")
    return key


def predict_labels(proba: Any, threshold: float) -> np.ndarray:
    return (np.asarray(proba, dtype=float) >= threshold).astype(int)


def classification_metrics(y_true: Any, proba: Any, threshold: float) -> dict[str, float]:
    """The churn-class metrics of probabilities `proba` against 0/1 labels `y_true` at `threshold`."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape}) and probabilities ({p.shape}) differ in shape")
    if len(np.unique(y)) < 2:
        raise ValueError("evaluation needs both classes (churned and not) among the labels")
    pred = predict_labels(p, threshold)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
    }


@dataclass
class Evaluation:
    """A fitted model's hold-out result."""

    metrics: dict[str, float]
    threshold: float
    confusion_matrix: list[list[int]]  # [[tn, fp], [fn, tp]]: rows true 0/1, columns predicted 0/1
    report: dict[str, Any]  # sklearn classification_report(output_dict=True)
    report_text: str
    n_rows: int
    proba: np.ndarray  # churn probabilities of the evaluated rows (for plots)
    y_true: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("proba")
        doc.pop("y_true")
        return doc


def evaluate_proba(y_true: Any, proba: Any, threshold: float) -> Evaluation:
    """Evaluate churn probabilities against 0/1 labels at `threshold`."""
    from sklearn.metrics import classification_report, confusion_matrix

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    metrics = classification_metrics(y, p, threshold)
    pred = predict_labels(p, threshold)
    names = ["not churned (0)", "churned (1)"]
    return Evaluation(
        metrics=metrics,
        threshold=float(threshold),
        confusion_matrix=confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        report=classification_report(y, pred, labels=[0, 1], target_names=names, output_dict=True,
                                      zero_division=0),
        report_text=classification_report(y, pred, labels=[0, 1], target_names=names, digits=4,
                                          zero_division=0),
        n_rows=int(len(y)),
        proba=p,
        y_true=y,
    )


def evaluate(pipeline: Pipeline, X: pd.DataFrame, y: Any, threshold: float) -> Evaluation:  # noqa: N803
    """Evaluate a fitted model pipeline on rows `X` (raw feature columns) with labels `y`."""
    return evaluate_proba(y, pipeline.predict_proba(X)[:, 1], threshold)


def feature_importance(pipeline: Pipeline) -> pd.Series:
    """Importance per encoded feature, largest first, indexed by the encoder's feature names.

    XGBoost: total gain per feature (features never split on score 0); random forest: mean impurity
    decrease; logistic regression: |coefficient| on the standardised features.
    """
    encoder = pipeline.steps[0][1]
    names = list(encoder.get_feature_names_out())
    estimator = pipeline.steps[-1][1]
    kind = type(estimator).__name__
    if kind == "XGBClassifier":
        gain = estimator.get_booster().get_score(importance_type="total_gain")
        values = np.array([gain.get(f"f{i}", 0.0) for i in range(len(names))], dtype=float)
        kind_label = "total_gain"
    elif hasattr(estimator, "feature_importances_"):
        values = np.asarray(estimator.feature_importances_, dtype=float)
        kind_label = "impurity_decrease"
    elif hasattr(estimator, "coef_"):
        values = np.abs(np.asarray(estimator.coef_, dtype=float).ravel())
        kind_label = "abs_coefficient"
    else:
        raise NotImplementedError(f"feature importance is not available for {kind}")
    if len(values) != len(names):
        raise ValueError(f"{kind} has {len(values)} importances for {len(names)} encoded features")
    series = pd.Series(values, index=names, name=kind_label)
    return series.sort_values(ascending=False, kind="stable")


def curve_points(y_true: Any, proba: Any, threshold: float) -> dict[str, list[dict[str, float | int]]]:
    """Plot data for DVC (``dvc plots``): ROC (fpr, tpr), precision-recall (recall, precision) and the
    confusion records (actual, predicted) at `threshold`, each a list of flat dicts ready for JSON."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    fpr, tpr, roc_thr = roc_curve(y, p)
    precision, recall, pr_thr = precision_recall_curve(y, p)
    pred = predict_labels(p, threshold)
    return {
        "roc": [{"fpr": float(a), "tpr": float(b), "threshold": float(min(t, 1.0))}
                for a, b, t in zip(fpr, tpr, roc_thr, strict=True)],
        "precision_recall": [{"recall": float(r), "precision": float(q), "threshold": float(t)}
                             for r, q, t in zip(recall[:-1], precision[:-1], pr_thr, strict=True)],
        "confusion": [{"actual": int(a), "predicted": int(b)} for a, b in zip(y, pred, strict=True)],
    }
