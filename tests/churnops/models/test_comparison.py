"""The promotion gate's statistics (churnops.models.comparison): DeLong's test checked against a brute-force
U-statistic computation and against a paired bootstrap; decisions on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from churnops.models.comparison import (
    _metric,
    average_precision,
    compare_paired,
    delong_components,
    delong_paired,
    paired_bootstrap,
)
from churnops.models.evaluation import classification_metrics


def brute_force_delong_variance(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(AUC(a) - AUC(b), its DeLong variance) from the pairwise kernel psi(x, y) = 1 / 0.5 / 0: O(m n)."""
    pos, neg = y == 1, y == 0
    comps = []
    for p in (a, b):
        diff = p[pos][:, None] - p[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = int(pos.sum()), int(neg.sum())
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = comps

    def cov(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))

    var = (cov(v10_a, v10_a) + cov(v10_b, v10_b) - 2 * cov(v10_a, v10_b)) / m \
        + (cov(v01_a, v01_a) + cov(v01_b, v01_b) - 2 * cov(v01_a, v01_b)) / n
    return auc_a - auc_b, var


def scores(n: int, seed: int, signal_a: float, signal_b: float, *, rounding: int | None = None):
    """Labels and two models' scores built on the same latent risk (so they are correlated, as a champion
    and its challenger are); `signal_*` sets how much of the risk each one sees."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(2 * risk - 1.5)))).astype(int)
    a = signal_a * risk + rng.normal(size=n)
    b = signal_b * risk + rng.normal(size=n)
    if rounding is not None:  # coarse scores: many ties
        a, b = np.round(a, rounding), np.round(b, rounding)
    return y, a, b


@pytest.mark.parametrize("seed,rounding", [(1, None), (2, 1), (3, 0)])
def test_delong_matches_a_brute_force_u_statistic_including_ties(seed, rounding):
    y, a, b = scores(80, seed, 1.0, 0.6, rounding=rounding)
    auc, v10, v01 = delong_components(y, a)
    assert auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert v01.mean() == pytest.approx(auc, abs=1e-12)
    diff, var = brute_force_delong_variance(y, a, b)
    result = delong_paired(y, a, b, level=0.05)
    assert result.difference == pytest.approx(diff, abs=1e-12)
    se = (result.ci_high - result.ci_low) / (2 * 1.959963984540054)
    assert se == pytest.approx(np.sqrt(var), rel=1e-9)
    assert (result.positives, result.negatives) == (int(y.sum()), int((1 - y).sum()))


def test_delong_standard_error_agrees_with_a_paired_bootstrap():
    y, a, b = scores(1500, 4, 1.0, 0.8)
    delong = delong_paired(y, a, b, level=0.05)

    def auc(yy: np.ndarray, pp: np.ndarray) -> float:  # scipy's Mann-Whitney U, not our mid-rank code
        positives = pp[yy == 1]
        return mannwhitneyu(positives, pp[yy == 0]).statistic / (positives.size * (yy.size - positives.size))

    boot = paired_bootstrap(y, a, b, auc, level=0.05, rounds=800, seed=0)
    assert boot.difference == pytest.approx(delong.difference, abs=1e-12)
    width_delong, width_boot = delong.ci_high - delong.ci_low, boot.ci_high - boot.ci_low
    assert width_boot == pytest.approx(width_delong, rel=0.15)
    assert boot.significant == delong.significant


def test_clearly_better_challenger_is_significant():
    y, a, b = scores(2000, 5, 1.5, 0.5)
    result = compare_paired(y, a, b, "roc_auc")
    assert result.method == "delong" and result.difference > 0.05
    assert result.significant and result.ci_low > 0 and result.p_value < 1e-6


def test_same_quality_retrain_is_not_significant():
    # Both see the risk equally; their hold-out AUCs differ by noise alone (here by more than a 0.001 margin).
    y, a, b = scores(800, 6, 1.0, 1.0)
    result = compare_paired(y, a, b, "roc_auc")
    assert abs(result.difference) > 0.001
    assert not result.significant and result.ci_low < 0 < result.ci_high and result.p_value > 0.05


def test_identical_predictions_are_no_difference():
    y, a, _ = scores(300, 7, 1.0, 1.0)
    result = delong_paired(y, a, a.copy())
    assert result.difference == 0 and result.p_value == 1.0 and not result.significant


@pytest.mark.parametrize("metric", ["pr_auc", "f1"])
def test_other_metrics_use_a_seeded_paired_bootstrap(metric):
    y, a, b = scores(1000, 8, 1.5, 0.3)
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    first = compare_paired(y, pa, pb, metric, thresholds=(0.5, 0.5), rounds=300, seed=3)
    again = compare_paired(y, pa, pb, metric, thresholds=(0.5, 0.5), rounds=300, seed=3)
    assert first == again and first.method == "paired_bootstrap" and first.significant


@pytest.mark.parametrize("rounding", [None, 1])
def test_bootstrap_metrics_equal_the_hold_out_metrics(rounding):
    y, a, _ = scores(700, 9, 1.0, 1.0, rounding=rounding)
    p = np.round(1 / (1 + np.exp(-a)), 2 if rounding else 12)  # ties in the probabilities too
    expected = classification_metrics(y, p, 0.4)
    assert average_precision(y, p) == pytest.approx(expected["pr_auc"], abs=1e-12)
    for key in ("f1", "precision", "recall", "accuracy", "pr_auc"):
        assert _metric(key, 0.4)(y, p) == pytest.approx(expected[key], abs=1e-12), key
