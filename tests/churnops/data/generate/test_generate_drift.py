"""Drift options move the distribution by the requested amount and nothing else breaks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churnops.data.calibrate import default_calibration_path
from churnops.data.generate import DriftSpec, generate
from churnops.settings import SchemaSettings

ROWS = 20_000


@pytest.fixture(scope="module")
def baseline(schema: SchemaSettings) -> pd.DataFrame:
    return generate(schema, ROWS, seed=3)


@pytest.fixture(scope="module")
def calibrated_std() -> dict[str, float]:
    doc = json.loads(default_calibration_path().read_text())
    return {c: meta["std"] for c, meta in doc["numeric"].items()}


@pytest.mark.parametrize(("column", "sigmas"), [("Customer_Age", 1.0), ("Total_Trans_Ct", -0.5),
                                                ("Credit_Limit", 0.8), ("Total_Ct_Chng_Q4_Q1", 2.0)])
def test_shift_moves_the_mean_by_the_requested_standard_deviations(
        schema: SchemaSettings, baseline: pd.DataFrame, calibrated_std: dict[str, float],
        column: str, sigmas: float) -> None:
    drifted = generate(schema, ROWS, seed=3, drift=DriftSpec(shifts={column: sigmas}))
    moved = (drifted[column].mean() - baseline[column].mean()) / calibrated_std[column]
    assert moved == pytest.approx(sigmas, abs=0.03)
    assert drifted[column].std() == pytest.approx(baseline[column].std(), rel=0.03)  # shape kept
    untouched = [c for c in schema.feature_columns if c != column and c not in
                 ("Avg_Open_To_Buy", "Avg_Utilization_Ratio", "Total_Revolving_Bal")]
    pd.testing.assert_frame_equal(drifted[untouched], baseline[untouched])


@pytest.mark.parametrize(("column", "factor"), [("Months_on_book", 1.5), ("Customer_Age", 0.5),
                                                ("Total_Amt_Chng_Q4_Q1", 1.3)])
def test_scale_multiplies_the_spread_around_the_mean(schema: SchemaSettings, baseline: pd.DataFrame,
                                                     column: str, factor: float) -> None:
    drifted = generate(schema, ROWS, seed=3, drift=DriftSpec(scales={column: factor}))
    assert drifted[column].std() / baseline[column].std() == pytest.approx(factor, rel=0.05)
    assert drifted[column].mean() == pytest.approx(baseline[column].mean(), rel=0.02)


def test_drifted_inputs_keep_the_accounting_identities(schema: SchemaSettings) -> None:
    frame = generate(schema, 5000, seed=8, drift=DriftSpec(shifts={"Credit_Limit": -0.7},
                                                           scales={"Total_Revolving_Bal": 1.6}))
    limit, balance = frame["Credit_Limit"], frame["Total_Revolving_Bal"]
    assert np.allclose(frame["Avg_Open_To_Buy"], limit - balance, atol=1e-6)
    nonzero = limit > 0
    assert np.allclose(frame.loc[nonzero, "Avg_Utilization_Ratio"], (balance / limit)[nonzero].round(3))
    for col, spec in schema.numeric.items():
        assert frame[col].between(spec.min, spec.max).all(), col


def test_derived_columns_cannot_be_drifted_directly(schema: SchemaSettings) -> None:
    with pytest.raises(ValueError, match=r"Avg_Utilization_Ratio \(= Total_Revolving_Bal / Credit_Limit\)"):
        generate(schema, 100, seed=1, drift=DriftSpec(scales={"Avg_Utilization_Ratio": 2.0}))


def test_mix_sets_the_category_probabilities(schema: SchemaSettings, baseline: pd.DataFrame) -> None:
    drift = DriftSpec.parse(mixes=["Card_Category=Blue:0.5,Silver:0.3"], schema=schema)
    drifted = generate(schema, ROWS, seed=3, drift=drift)
    share = drifted["Card_Category"].value_counts(normalize=True)
    assert share["Blue"] == pytest.approx(0.5, abs=0.012)
    assert share["Silver"] == pytest.approx(0.3, abs=0.012)
    # the unlisted categories share the rest in their calibrated proportion (Gold ~ 116 : Platinum ~ 20)
    assert share["Gold"] + share["Platinum"] == pytest.approx(0.2, abs=0.012)
    assert share["Gold"] > 3 * share["Platinum"]
    # premium cards still come with higher limits
    medians = drifted.groupby("Card_Category")["Credit_Limit"].median()
    assert medians["Blue"] < medians["Silver"]


def test_mix_of_every_category_uses_relative_weights(schema: SchemaSettings) -> None:
    drift = DriftSpec.parse(mixes=["Gender=F:1,M:3"], schema=schema)
    share = generate(schema, ROWS, seed=5, drift=drift)["Gender"].value_counts(normalize=True)
    assert share["M"] == pytest.approx(0.75, abs=0.012)


def test_churn_rate_option_sets_the_rate_and_keeps_the_churn_signal(schema: SchemaSettings, churned) -> None:
    frame = generate(schema, ROWS, seed=6, churn_rate=0.4)
    is_churn = churned(frame, schema)
    assert is_churn.mean() == pytest.approx(0.4, abs=0.012)
    assert frame.loc[is_churn, "Total_Trans_Ct"].mean() < frame.loc[~is_churn, "Total_Trans_Ct"].mean() - 15


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_churn_rate_outside_the_open_unit_interval_is_refused(schema: SchemaSettings, rate: float) -> None:
    with pytest.raises(ValueError, match="churn_rate"):
        generate(schema, 100, seed=1, churn_rate=rate)
