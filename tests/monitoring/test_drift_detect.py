"""The detector core: decisions on generated windows, the effect-size floor, the minimum window, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.backends import benjamini_hochberg, bonferroni
from monitoring.detect import DriftConfig, DriftDetector, DriftInputError, check_drift

CFG = DriftConfig(backend="scipy", min_window=300)


def test_window_from_the_reference_distribution_raises_nothing(reference, make_table, schema):
    result = check_drift(reference, make_table(800, seed=2), schema, CFG, reference_version="7")
    assert result.status == "no_drift"
    assert result.exit_code == 0
    assert result.drifted_features == []
    assert len(result.features) == len(schema.feature_columns)
    assert result.reference_version == "7" and result.window_size == 800


def test_shift_of_one_numeric_feature_is_found_and_only_that_feature(reference, make_table, schema):
    current = make_table(800, seed=3, shifts={"Total_Trans_Amt": 0.6})
    result = check_drift(reference, current, schema, CFG)
    assert result.status == "drift"
    assert result.exit_code == 3
    assert result.drifted_features == ["Total_Trans_Amt"]
    feature = next(f for f in result.features if f.feature == "Total_Trans_Amt")
    assert feature.test == "ks" and feature.p_value < result.threshold and feature.effect_size >= 0.05


def test_changed_category_mix_is_found_by_the_chi_squared_test(reference, make_table, schema):
    current = make_table(800, seed=5, mixes={"Card_Category": {"Blue": 0.6, "Silver": 0.3, "Gold": 0.08,
                                                               "Platinum": 0.02}})
    result = check_drift(reference, current, schema, CFG)
    assert "Card_Category" in result.drifted_features
    feature = next(f for f in result.features if f.feature == "Card_Category")
    assert feature.test == "chi2" and feature.kind == "categorical"
    assert feature.effect_size > 0.2  # total variation distance: ~30% of customers changed card


def test_effect_size_floor_holds_back_a_significant_but_tiny_shift():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=50_000), "y": rng.normal(size=50_000)})
    cur = pd.DataFrame({"x": rng.normal(0.06, 1, size=50_000), "y": rng.normal(size=50_000)})
    with_floor = DriftDetector(ref, ["x", "y"], [], DriftConfig(backend="scipy", min_shift_sd=0.1)).check(cur)
    without = DriftDetector(ref, ["x", "y"], [], DriftConfig(backend="scipy", min_shift_sd=0.0)).check(cur)
    x = next(f for f in with_floor.features if f.feature == "x")
    assert x.significant and not x.drift  # statistically real, practically harmless
    assert x.effect_size == pytest.approx(0.06, abs=0.015)  # the shift, in standard deviations
    assert with_floor.status == "no_drift" and with_floor.significant_below_floor == ["x"]
    assert without.status == "drift" and without.drifted_features == ["x"]


def test_tiny_shift_of_a_zero_inflated_column_is_held_back_though_ks_jumps():
    # Like Total_Revolving_Bal: a quarter of the customers at exactly 0. Moving every value by 0.02 sd
    # moves that atom, so the KS statistic leaps to ~0.25; the values moved only 0.02 sd on average.
    rng = np.random.default_rng(2)

    def balances(size):
        return np.where(rng.random(size) < 0.25, 0.0, rng.gamma(4.0, 400.0, size))

    ref = pd.DataFrame({"bal": balances(20_000)})
    cur = pd.DataFrame({"bal": balances(20_000) + 0.02 * ref["bal"].std()})
    (f,) = DriftDetector(ref, ["bal"], [], DriftConfig(backend="scipy")).check(cur).features
    assert f.statistic > 0.2 and f.significant
    assert f.effect_size == pytest.approx(0.02, abs=0.015) and not f.drift


def test_category_floor_uses_total_variation_distance():
    rng = np.random.default_rng(1)
    cats = np.array(["a", "b", "c"])
    ref = pd.DataFrame({"c": rng.choice(cats, 40_000, p=[0.5, 0.3, 0.2])})
    cur = pd.DataFrame({"c": rng.choice(cats, 40_000, p=[0.52, 0.29, 0.19])})  # TVD 0.02
    result = DriftDetector(ref, [], ["c"], DriftConfig(backend="scipy", min_category_shift=0.05)).check(cur)
    f = result.features[0]
    assert f.significant and not f.drift
    assert f.effect_size == pytest.approx(0.02, abs=0.01)


def test_short_window_is_not_enough_data_and_runs_no_test(reference, make_table, schema):
    result = check_drift(reference, make_table(299, seed=9, shifts={"Total_Trans_Amt": 3.0}), schema, CFG)
    assert result.status == "not_enough_data"
    assert result.exit_code == 4
    assert result.features == [] and not result.drift
    assert "300" in result.message


def test_reference_smaller_than_the_minimum_window_is_an_error(make_table, schema):
    with pytest.raises(DriftInputError, match="reference has only 100 rows"):
        check_drift(make_table(100, seed=1), make_table(800, seed=2), schema, CFG)


def test_missing_column_and_missing_values_are_named(reference, make_table, schema):
    current = make_table(800, seed=2)
    with pytest.raises(DriftInputError, match="Credit_Limit"):
        check_drift(reference, current.drop(columns=["Credit_Limit"]), schema, CFG)
    current.loc[5, "Gender"] = None
    with pytest.raises(DriftInputError, match="'Gender' has 1 missing"):
        check_drift(reference, current, schema, CFG)


def test_unseen_category_counts_as_drift_when_it_is_large(reference, make_table, schema):
    current = make_table(800, seed=2)
    current.loc[current.index[:200], "Marital_Status"] = "Separated"
    result = check_drift(reference, current, schema, CFG)
    assert "Marital_Status" in result.drifted_features


def test_one_detector_tests_many_windows_without_leaking_state(reference, make_table, schema):
    det = DriftDetector.from_schema(reference, schema, CFG)
    first = det.check(make_table(800, seed=2))
    det.check(make_table(800, seed=3, shifts={"Total_Trans_Amt": 0.6}))
    again = det.check(make_table(800, seed=2))
    assert [f.p_value for f in first.features] == [f.p_value for f in again.features]


def test_report_dict_and_summary_carry_the_decision(reference, make_table, schema):
    result = check_drift(reference, make_table(800, seed=3, shifts={"Total_Trans_Amt": 0.6}), schema, CFG,
                         reference_version="3", source={"kind": "test"})
    doc = result.to_dict()
    assert doc["status"] == "drift" and doc["drifted_features"] == ["Total_Trans_Amt"]
    assert doc["config"]["min_shift_sd"] == 0.1 and doc["source"] == {"kind": "test"}
    assert {f["feature"] for f in doc["features"]} == set(schema.feature_columns)
    summary = result.summary()
    assert summary["effect_sizes"].keys() == {"Total_Trans_Amt"} and summary["reference_version"] == "3"


def test_bonferroni_and_benjamini_hochberg_thresholds():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.6])
    sig, thr = bonferroni(p, 0.05)
    assert thr == pytest.approx(0.01) and sig.tolist() == [True, True, False, False, False]
    sig, thr = benjamini_hochberg(p, 0.05)
    # bars 0.01, 0.02, 0.03, 0.04, 0.05: p_(2)=0.008 < 0.02 is the last below its bar
    assert thr == pytest.approx(0.02) and sig.tolist() == [True, True, False, False, False]
    sig, thr = benjamini_hochberg(np.array([0.2, 0.5]), 0.05)
    assert not sig.any() and thr == pytest.approx(0.025)


def test_gaps_in_columns_with_a_missing_value_policy_are_tested_on_what_is_present(reference, make_table,
                                                                                   schema):
    from churnops.settings import SchemaSettings

    with_gaps = SchemaSettings.model_validate({**schema.model_dump(), "missing": {
        "Credit_Limit": {"impute": "median"}, "Gender": {"impute": "most_frequent"}}})
    ref = reference.copy()
    ref.loc[ref.index[::40], ["Credit_Limit", "Gender"]] = None  # the training rows had gaps
    same = make_table(800, seed=2)
    same.loc[same.index[::40], ["Credit_Limit", "Gender"]] = None  # so do the requests /predict filled
    assert check_drift(ref, same, with_gaps, CFG).status == "no_drift"

    emptier = make_table(800, seed=2)
    emptier.loc[emptier.index[::3], "Gender"] = None  # a third of the requests now leave gender out
    result = check_drift(ref, emptier, with_gaps, CFG)
    assert result.drifted_features == ["Gender"]

    with pytest.raises(DriftInputError, match="'Total_Trans_Amt' has 1 missing"):  # no policy: refused
        gap = make_table(800, seed=2)
        gap.loc[3, "Total_Trans_Amt"] = None
        check_drift(ref, gap, with_gaps, CFG)
    with pytest.raises(DriftInputError, match="use monitoring.backend: scipy"):
        check_drift(ref, same, with_gaps, DriftConfig(backend="alibi", min_window=300))
