"""Statistical-test backends behind one small interface.

A backend compares a reference sample with a current window, feature by feature: the two-sample
Kolmogorov-Smirnov test (asymptotic p-value) on numeric features and the chi-squared test of a 2 x k
contingency table on categorical ones, then applies a multiple-testing correction across all features.

- ``alibi``: alibi-detect's ``TabularDrift`` (KS as in ``KSDrift`` on numeric columns, chi-squared on the
  columns declared categorical), which also takes the batch decision (Bonferroni or FDR). alibi-detect is
  licensed under the Business Source License 1.1 and pins numpy<2; it is imported only when this backend
  is used (the import costs about 5 s).
- ``scipy``: the same tests on scipy, and the same corrections, written here. The KS statistic is computed
  from sorted samples exactly as ``scipy.stats.ks_2samp`` computes it (the largest gap between the two
  empirical CDFs, evaluated at every observed value) and its p-value is ``ks_2samp``'s asymptotic one
  (``scipy.stats.kstwo.sf``); the chi-squared test is ``scipy.stats.chi2_contingency``. One sort of each
  current column serves both the KS test and the Wasserstein effect size, so this backend does less work
  than a bare ``ks_2samp`` loop. It gives alibi-detect's statistics and decisions
  (``tests/monitoring/test_drift_backends.py`` proves it on the same data, and ``ks_2samp``'s).

Inputs are already encoded by the detector core: numeric columns as *sorted* float64 arrays (the tests are
univariate, so only each column's values matter, not which row they sit in), categorical columns as
integer codes into a vocabulary shared by reference and current.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Correction = Literal["bonferroni", "fdr"]


class GapsNotSupported(ValueError):
    """The backend cannot test a sample whose numeric columns have gaps."""


@dataclass(frozen=True)
class EncodedColumns:
    """Columns of one sample, in feature order: numeric sorted float64 arrays, categorical int64 codes."""

    numeric: Mapping[str, np.ndarray]
    categorical: Mapping[str, np.ndarray]
    n_rows: int

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]


@dataclass(frozen=True)
class TestOutcome:
    """Per-feature statistics and p-values (feature order of the inputs) and the corrected decision."""

    features: list[str]
    statistics: np.ndarray
    p_values: np.ndarray
    threshold: float  # a feature is significant when its p-value is below this (after correction)
    significant: np.ndarray  # bool per feature
    batch_drift: bool  # any feature significant (before the effect-size floor)
    wasserstein: dict[str, float] | None = None  # numeric features' W1 distance, when the backend has it


class PreparedTest(Protocol):
    def test(self, current: EncodedColumns) -> TestOutcome: ...


class Backend(Protocol):
    name: str

    def prepare(self, reference: EncodedColumns, p_value: float, correction: Correction) -> PreparedTest: ...


def bonferroni(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    threshold = alpha / len(p_values)
    return p_values < threshold, threshold


def benjamini_hochberg(p_values: np.ndarray, q: float) -> tuple[np.ndarray, float]:
    """Step-up FDR: reject the k smallest p-values, k the largest rank with p_(k) < q k / n."""
    n = len(p_values)
    ranks = np.arange(1, n + 1)
    bars = q * ranks / n
    below = np.sort(p_values) < bars
    if not below.any():
        return np.zeros(n, dtype=bool), float(bars[0])
    threshold = float(bars[np.nonzero(below)[0].max()])
    return p_values < threshold, threshold


def _correct(p_values: np.ndarray, alpha: float, correction: Correction) -> tuple[np.ndarray, float]:
    if correction == "bonferroni":
        return bonferroni(p_values, alpha)
    if correction == "fdr":
        return benjamini_hochberg(p_values, alpha)
    raise ValueError(f"unknown correction {correction!r}: use bonferroni or fdr")


def ks_and_wasserstein(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance of two *sorted* samples, in linear time after the sorts.

    Both empirical CDFs are evaluated at every distinct observed value (right-continuous, as ``ks_2samp``
    does): the KS statistic is the largest absolute gap, W1 the area between the two CDFs (as
    ``scipy.stats.wasserstein_distance`` computes it). The smaller sample is inserted into the larger one
    (no re-sort, no binary search of the large sample), and the CDF counts are read off the merged array
    at the end of each run of equal values.
    """
    small, large = (ref, cur) if len(ref) <= len(cur) else (cur, ref)
    ns, nl = len(small), len(large)
    at = np.searchsorted(large, small, side="right")  # after equal values: the merge stays sorted
    merged = np.empty(nl + ns, dtype=np.float64)
    into = at + np.arange(ns)
    keep = np.ones(nl + ns, dtype=bool)
    keep[into] = False
    merged[into] = small
    merged[keep] = large
    from_small = (~keep).astype(np.float64)
    last = np.empty(len(merged), dtype=bool)  # last position of every distinct value
    np.not_equal(merged[1:], merged[:-1], out=last[:-1])
    last[-1] = True
    ends = np.flatnonzero(last)
    count_small = np.cumsum(from_small)[ends]  # values <= each distinct value, per sample
    # gap = count_small / ns - count_large / nl, with count_large = ends + 1 - count_small
    gap = np.abs(count_small / ns - (ends + 1 - count_small) / nl)
    d = float(gap.max())
    w1 = float(np.dot(gap[:-1], np.diff(merged[ends])))
    return d, w1


def ks_asymptotic_pvalue(d: float, m: int, n: int) -> float:
    """``ks_2samp(..., method="asymp")``'s two-sided p-value for statistic ``d`` and sample sizes m, n."""
    from scipy.stats import kstwo

    big, small = (float(m), float(n)) if m >= n else (float(n), float(m))
    en = big * small / (big + small)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0, 1))


def contingency(ref_codes: np.ndarray, cur_codes: np.ndarray, n_categories: int) -> np.ndarray:
    """2 x k table of category counts, without categories absent from both samples."""
    table = np.vstack([np.bincount(ref_codes, minlength=n_categories),
                       np.bincount(cur_codes, minlength=n_categories)])
    return table[:, table.sum(axis=0) > 0]


class _ScipyPrepared:
    def __init__(self, reference: EncodedColumns, p_value: float, correction: Correction) -> None:
        self.reference = reference
        self.p_value = p_value
        self.correction = correction
        self.n_categories = {c: int(v.max()) + 1 if len(v) else 0 for c, v in reference.categorical.items()}

    def test(self, current: EncodedColumns) -> TestOutcome:
        from scipy.stats import chi2_contingency

        names = self.reference.names
        stats = np.empty(len(names))
        pvals = np.empty(len(names))
        w1: dict[str, float] = {}
        for i, col in enumerate(self.reference.numeric):
            ref, cur = self.reference.numeric[col], current.numeric[col]  # present values (gaps left out)
            if len(ref) == 0 or len(cur) == 0:  # a column with a policy, empty throughout: nothing to test
                stats[i], w1[col], pvals[i] = 0.0, 0.0, 1.0
                continue
            stats[i], w1[col] = ks_and_wasserstein(ref, cur)
            pvals[i] = ks_asymptotic_pvalue(stats[i], len(ref), len(cur))
        offset = len(self.reference.numeric)
        for j, col in enumerate(self.reference.categorical):
            ref, cur = self.reference.categorical[col], current.categorical[col]
            k = max(self.n_categories[col], int(cur.max()) + 1 if len(cur) else 0)
            res = chi2_contingency(contingency(ref, cur, k))
            stats[offset + j], pvals[offset + j] = res.statistic, res.pvalue
        significant, threshold = _correct(pvals, self.p_value, self.correction)
        return TestOutcome(names, stats, pvals, threshold, significant, bool(significant.any()), w1)


class ScipyBackend:
    """KS and chi-squared straight from scipy; corrections implemented in this module."""

    name = "scipy"

    def prepare(self, reference: EncodedColumns, p_value: float, correction: Correction) -> _ScipyPrepared:
        return _ScipyPrepared(reference, p_value, correction)


class _AlibiPrepared:
    def __init__(self, reference: EncodedColumns, p_value: float, correction: Correction) -> None:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # alibi-detect imports transformers
        try:
            from alibi_detect.cd import TabularDrift
        except ImportError as exc:
            raise RuntimeError(
                "the alibi backend needs alibi-detect (pip install alibi-detect==0.13.0); "
                "or set monitoring.backend: scipy in params.yaml") from exc
        self.names = reference.names
        self.p_value = p_value
        n_num = len(reference.numeric)
        cats = {n_num + j: None for j in range(len(reference.categorical))}  # categories from the reference
        self.detector = TabularDrift(
            _matrix(reference), p_val=p_value, categories_per_feature=cats or None,
            correction=correction, x_ref_preprocessed=True)

    def test(self, current: EncodedColumns) -> TestOutcome:
        out = self.detector.predict(_matrix(current), drift_type="batch", return_p_val=True,
                                    return_distance=True)["data"]
        pvals = np.asarray(out["p_val"], dtype=np.float64)
        stats = np.asarray(out["distance"], dtype=np.float64)
        is_drift = bool(out["is_drift"])
        raw_threshold = out["threshold"]
        if np.ndim(raw_threshold) == 0:
            threshold = float(raw_threshold)
        else:  # FDR without any rejection returns every step's bar; the first one is the strictest pass mark
            threshold = float(np.asarray(raw_threshold).ravel()[0])
        significant = pvals < threshold if is_drift else np.zeros(len(pvals), dtype=bool)
        return TestOutcome(self.names, stats, pvals, threshold, significant, is_drift)


def _matrix(cols: EncodedColumns) -> np.ndarray:
    """One float64 matrix (column-major: every feature's column is contiguous for the sorts)."""
    out = np.empty((cols.n_rows, len(cols.numeric) + len(cols.categorical)), dtype=np.float64, order="F")
    for i, values in enumerate([*cols.numeric.values(), *cols.categorical.values()]):
        if len(values) != cols.n_rows:
            raise GapsNotSupported("the alibi backend tests whole rows, and a numeric column has gaps (a "
                                   "column with a missing-value policy): use monitoring.backend: scipy, "
                                   "which tests each column on its present values")
        out[:, i] = values
    return out


class AlibiBackend:
    """alibi-detect ``TabularDrift``: KS on numeric features, chi-squared on categorical ones."""

    name = "alibi"

    def prepare(self, reference: EncodedColumns, p_value: float, correction: Correction) -> _AlibiPrepared:
        return _AlibiPrepared(reference, p_value, correction)


BACKENDS: dict[str, type] = {"alibi": AlibiBackend, "scipy": ScipyBackend}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown drift backend {name!r}: choose one of {sorted(BACKENDS)} "
                         "(monitoring.backend in params.yaml)") from None


__all__: Sequence[str] = ["Backend", "EncodedColumns", "GapsNotSupported", "TestOutcome", "get_backend",
                          "AlibiBackend", "ScipyBackend", "benjamini_hochberg", "bonferroni", "contingency",
                          "ks_and_wasserstein", "ks_asymptotic_pvalue"]
