"""The scipy backend gives alibi-detect's statistics and decisions on the same data.

alibi-detect returns float32 statistics and p-values; the comparison allows for that rounding only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from monitoring.backends import (
    AlibiBackend,
    ScipyBackend,
    get_backend,
    ks_and_wasserstein,
    ks_asymptotic_pvalue,
)
from monitoring.detect import DriftConfig, DriftDetector

SCENARIOS = {
    "no_drift": {},
    "numeric_shift": {"shifts": {"Total_Trans_Amt": 0.4, "Customer_Age": 0.2}},
    "category_mix": {"mixes": {"Income_Category": {"Less than $40K": 0.6, "$40K - $60K": 0.1,
                                                   "$60K - $80K": 0.1, "$80K - $120K": 0.1,
                                                   "$120K +": 0.05, "Unknown": 0.05}}},
}


@pytest.fixture(scope="module")
def alibi_backend():
    pytest.importorskip("alibi_detect")
    return AlibiBackend()


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scipy_and_alibi_backends_agree(alibi_backend, reference, make_table, schema, scenario, correction):
    current = make_table(700, seed=11, **SCENARIOS[scenario])
    cfg = DriftConfig(correction=correction, min_window=300)
    a = DriftDetector.from_schema(reference, schema, cfg, backend=alibi_backend).check(current)
    s = DriftDetector.from_schema(reference, schema, cfg, backend=ScipyBackend()).check(current)
    assert a.backend == "alibi" and s.backend == "scipy"
    assert [f.feature for f in a.features] == [f.feature for f in s.features]
    np.testing.assert_allclose([f.statistic for f in a.features], [f.statistic for f in s.features],
                               rtol=1e-6)
    np.testing.assert_allclose([f.p_value for f in a.features], [f.p_value for f in s.features],
                               rtol=1e-5, atol=1e-30)
    assert a.threshold == pytest.approx(s.threshold)
    assert [f.significant for f in a.features] == [f.significant for f in s.features]
    assert [f.drift for f in a.features] == [f.drift for f in s.features]
    assert a.status == s.status
    if scenario != "no_drift":
        assert s.status == "drift"  # the scenarios are strong enough that agreement is not "both silent"


def test_backends_agree_on_a_two_category_column_with_yates_correction(alibi_backend):
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"g": rng.choice(["F", "M"], 2000, p=[0.5, 0.5]), "x": rng.normal(size=2000)})
    cur = pd.DataFrame({"g": rng.choice(["F", "M"], 900, p=[0.42, 0.58]), "x": rng.normal(size=900)})
    cfg = DriftConfig(min_window=300)
    a = DriftDetector(ref, ["x"], ["g"], cfg, backend=alibi_backend).check(cur)
    s = DriftDetector(ref, ["x"], ["g"], cfg, backend=ScipyBackend()).check(cur)
    np.testing.assert_allclose([f.statistic for f in a.features], [f.statistic for f in s.features],
                               rtol=1e-6)
    assert [f.drift for f in a.features] == [f.drift for f in s.features] == [False, True]


@pytest.mark.parametrize("kind", ["continuous", "ties", "small_current", "large_current"])
def test_one_merge_gives_ks_2samp_and_wasserstein_distance_exactly(kind):
    rng = np.random.default_rng(7)
    ref, cur = {
        "continuous": (rng.normal(size=3000), rng.normal(0.1, 1.2, size=700)),
        "ties": (rng.integers(0, 6, 2000).astype(float), rng.integers(0, 8, 900).astype(float)),
        "small_current": (rng.gamma(2.0, size=8000), rng.gamma(2.2, size=300)),
        "large_current": (rng.normal(size=2000), rng.normal(0.02, 1, size=60_000)),
    }[kind]
    d, w1 = ks_and_wasserstein(np.sort(ref), np.sort(cur))
    expected = ks_2samp(ref, cur, method="asymp")
    assert d == expected.statistic
    assert ks_asymptotic_pvalue(d, len(ref), len(cur)) == expected.pvalue
    assert w1 == pytest.approx(wasserstein_distance(ref, cur), rel=1e-12)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"\['alibi', 'scipy'\]"):
        get_backend("evidently")
