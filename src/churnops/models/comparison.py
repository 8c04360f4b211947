"""Paired comparison of two models scored on the same hold-out rows: is the challenger's gain real or noise?

The promotion gate (:func:`churnops.registry.evaluate_gate`) asks this of the challenger and the champion:

- ROC-AUC: DeLong's test (DeLong, DeLong & Clarke-Pearson 1988). Both AUCs are Mann-Whitney U-statistics
  over the same positives and negatives; their difference has a variance estimated from the structural
  components (each positive's share of negatives ranked below it, each negative's share of positives ranked
  above it) and their covariance across the two models, computed with mid-ranks in O(n log n)
  (Sun & Xu 2014's formulation);
- any other metric (average precision, F1 at each model's threshold): a paired, class-stratified bootstrap
  of the difference (the same resampled rows for both models), seeded.

:func:`compare_paired` returns a :class:`PairedComparison`: the difference (challenger minus champion), its
two-sided ``1 - level`` confidence interval and p-value. The gain is significant when the interval lies
above zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class PairedComparison:
    method: str  # "delong" or "paired_bootstrap"
    difference: float  # challenger minus champion
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, H0: no difference
    level: float  # significance level; the interval is the two-sided (1 - level) one
    positives: int
    negatives: int

    @property
    def significant(self) -> bool:
        """The interval lies above zero: the challenger is better beyond the hold-out's noise."""
        return self.ci_low > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _midranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def delong_components(y: np.ndarray, proba: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 per positive, V01 per negative): the U-statistic's structural components.

    V10[i] is the share of negatives that positive i outranks (ties count half), V01[j] the share of
    positives that outrank negative j; AUC is the mean of either.
    """
    y = np.asarray(y).astype(bool)
    p = np.asarray(proba, dtype=np.float64)
    pos, neg = p[y], p[~y]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes among the labels")
    combined = _midranks(np.concatenate([pos, neg]))
    within_pos, within_neg = _midranks(pos), _midranks(neg)
    v10 = (combined[:m] - within_pos) / n
    v01 = 1.0 - (combined[m:] - within_neg) / m
    auc = float(v10.mean())
    return auc, v10, v01


def delong_paired(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, level: float = 0.05
                  ) -> PairedComparison:
    """DeLong's test of AUC(challenger) - AUC(champion) on the same rows."""
    from scipy.stats import norm

    auc_a, v10_a, v01_a = delong_components(y, challenger)
    auc_b, v10_b, v01_b = delong_components(y, champion)
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:  # identical rankings (or degenerate data): no evidence either way unless they differ
        p_value = 1.0 if diff == 0 else 0.0
        low = high = diff
    else:
        p_value = float(2 * norm.sf(abs(diff) / se))
        half = float(norm.ppf(1 - level / 2)) * se
        low, high = diff - half, diff + half
    return PairedComparison("delong", diff, low, high, p_value, level, m, n)


def paired_bootstrap(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                     metric_a: Metric, metric_b: Metric | None = None, *, level: float = 0.05,
                     rounds: int = 1000, seed: int = 0) -> PairedComparison:
    """Bootstrap of metric_a(challenger) - metric_b(champion), resampling the same rows for both models.

    Positives and negatives are resampled separately (each class keeps its size), so every replicate has
    both classes. The interval is the percentile interval; the p-value is twice the smaller tail share of
    replicates on the other side of zero (at least 1 / rounds).
    """
    metric_b = metric_b or metric_a
    y = np.asarray(y).astype(int)
    a, b = np.asarray(challenger, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the paired bootstrap needs both classes among the labels")
    rng = np.random.default_rng(seed)
    diffs = np.empty(rounds)
    for k in range(rounds):
        rows = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        diffs[k] = metric_a(y[rows], a[rows]) - metric_b(y[rows], b[rows])
    diff = metric_a(y, a) - metric_b(y, b)
    low, high = np.quantile(diffs, [level / 2, 1 - level / 2])
    tail = min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    p_value = min(1.0, max(2 * tail, 1.0 / rounds))
    return PairedComparison("paired_bootstrap", float(diff), float(low), float(high), p_value, level,
                            int(pos.size), int(neg.size))


def compare_paired(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, metric: str, *,
                   thresholds: tuple[float, float] = (0.5, 0.5), level: float = 0.05, rounds: int = 1000,
                   seed: int = 0) -> PairedComparison:
    """Compare two models' hold-out `metric` (a key of ``classification_metrics``) on the same rows.

    ROC-AUC uses DeLong's test; other metrics the paired bootstrap, each model at its own threshold.
    """
    if metric == "roc_auc":
        return delong_paired(y, challenger, champion, level)
    return paired_bootstrap(y, challenger, champion, _metric(metric, thresholds[0]),
                            _metric(metric, thresholds[1]), level=level, rounds=rounds, seed=seed)


def _metric(metric: str, threshold: float) -> Metric:
    """One hold-out metric as a function of (labels, probabilities), equal to what ``classification_metrics``
    computes under that key, in plain numpy (the bootstrap calls it thousands of times; sklearn's input
    checks cost more than the arithmetic)."""
    if metric == "pr_auc":
        return average_precision
    if metric not in ("f1", "precision", "recall", "accuracy"):
        raise ValueError(f"no paired comparison for metric {metric!r}")

    def at_threshold(y: np.ndarray, p: np.ndarray) -> float:
        pred = p >= threshold
        truth = y == 1
        tp = float(np.sum(pred & truth))
        fp, fn = float(np.sum(pred & ~truth)), float(np.sum(~pred & truth))
        if metric == "accuracy":
            return float(np.mean(pred == truth))
        if metric == "precision":
            return tp / (tp + fp) if tp + fp else 0.0
        if metric == "recall":
            return tp / (tp + fn) if tp + fn else 0.0
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    return at_threshold


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (sklearn's definition: precision at each distinct score, weighted by the recall
    gained there; tied scores form one step)."""
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
    ys, ps = np.asarray(y)[order] == 1, np.asarray(p, dtype=np.float64)[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tps = np.cumsum(ys)[last_of_tie].astype(np.float64)
    if tps[-1] == 0:
        return 0.0
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
