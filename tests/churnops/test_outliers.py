"""The compiled Isolation Forest scores exactly like scikit-learn's, flags the rare rows, and round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from churnops.features import FeatureEncoder
from churnops.outliers import OutlierDetector, fit_outlier_detector


@pytest.fixture(scope="module")
def fitted(reference, schema):
    return fit_outlier_detector(reference, schema, seed=5, n_estimators=50, contamination=0.02)


def test_scores_and_flags_equal_scikit_learn(fitted, reference, make_table, schema):
    enc = FeatureEncoder.from_schema(schema).fit()
    forest = IsolationForest(n_estimators=50, max_samples=256, contamination=0.02, random_state=5,
                             n_jobs=1).fit(enc.transform(reference))
    window = make_table(1000, seed=21, shifts={"Credit_Limit": 1.0})
    X = enc.transform(window)  # noqa: N806
    scores, flags = fitted.score_frame(window)
    np.testing.assert_allclose(scores, -forest.score_samples(X), rtol=1e-12)
    assert (flags == ((forest.predict(X) == -1) | fitted.outside_range(X).any(axis=1))).all()
    within = ~fitted.outside_range(X).any(axis=1)
    assert within.mean() > 0.9 and (flags[within] == (forest.predict(X[within]) == -1)).all()


def test_threshold_flags_the_contamination_share_of_the_reference(fitted, reference):
    _, flags = fitted.score_frame(reference)
    assert flags.mean() == pytest.approx(0.02, abs=0.005)


def test_values_far_outside_the_reference_range_are_flagged_and_named(fitted, reference):
    odd = reference.iloc[[0]].copy()
    odd["Credit_Limit"] = 900_000.0  # within the schema's range, far beyond every reference value
    odd["Total_Trans_Amt"] = 900_000
    (anomaly,) = fitted.score_records(odd.to_dict("records"))
    assert anomaly.is_outlier
    assert anomaly.out_of_range == ("Credit_Limit", "Total_Trans_Amt")
    assert fitted.score_frame(odd)[1][0]


def test_ordinary_customers_are_rarely_flagged(fitted, make_table):
    fresh = make_table(1000, seed=31)  # same distribution, rows the forest never saw
    flagged = fitted.score_frame(fresh)[1].mean()
    assert flagged < 0.05
    assert [a.out_of_range for a in fitted.score_records(fresh.iloc[:50].to_dict("records"))].count(()) >= 48


def test_a_shifted_population_raises_the_flag_rate(fitted, make_table):
    fresh = fitted.score_frame(make_table(1000, seed=31))[1].mean()  # about 2%
    shifted_rows = make_table(1000, seed=32, shifts={"Total_Trans_Amt": 3.0, "Credit_Limit": 2.0})
    shifted = fitted.score_frame(shifted_rows)
    assert shifted[1].mean() > max(0.1, 4 * fresh)  # measured: 21% vs 2%


def test_records_path_equals_frame_path(fitted, reference):
    rows = reference.iloc[:20]
    anomalies = fitted.score_records(rows.to_dict("records"))
    scores, flags = fitted.score_frame(rows)
    assert [a.score for a in anomalies] == pytest.approx(scores.tolist(), rel=1e-12)
    assert [a.is_outlier for a in anomalies] == flags.tolist()
    assert set(anomalies[0].to_dict()) == {"score", "is_outlier", "out_of_range"}
    # one row at a time (the /predict path) gives exactly the same answers, out-of-range names included
    odd = rows.copy()
    odd.iloc[::3, odd.columns.get_loc(fitted.range_columns[0])] = 1e9
    records = odd.to_dict("records")
    assert [fitted.score_records([r])[0] for r in records] == fitted.score_records(records)


def test_saved_detector_loads_without_pickle_and_scores_the_same(fitted, reference, tmp_path):
    path = fitted.save(tmp_path / "outliers" / "isolation_forest.npz")
    loaded = OutlierDetector.load(path)
    np.testing.assert_array_equal(loaded.score_frame(reference)[0], fitted.score_frame(reference)[0])
    np.testing.assert_array_equal(loaded.range_high, fitted.range_high)
    assert loaded.cutoff == fitted.cutoff and loaded.meta["contamination"] == 0.02


def test_loading_a_foreign_file_says_what_it_is(tmp_path):
    bad = tmp_path / "model.npz"
    np.savez(bad, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not an outlier detector saved by churnops"):
        OutlierDetector.load(bad)
