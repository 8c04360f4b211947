"""Generated tables behave like the real one: marginals, correlations, churn rate, churn relationships."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from churnops.settings import SchemaSettings

DERIVED = {"Avg_Open_To_Buy", "Avg_Utilization_Ratio"}  # follow their inputs, so a little looser


def test_numeric_marginals_match_the_real_table(synthetic: pd.DataFrame, real_frame: pd.DataFrame,
                                                schema: SchemaSettings) -> None:
    ks = {col: stats.ks_2samp(real_frame[col], synthetic[col]).statistic for col in schema.numeric}
    too_far = {c: round(v, 3) for c, v in ks.items() if v > (0.08 if c in DERIVED else 0.03)}
    assert not too_far, f"KS statistic real vs synthetic too large: {too_far}"


def test_category_frequencies_match_the_real_table(synthetic: pd.DataFrame, real_frame: pd.DataFrame,
                                                   schema: SchemaSettings) -> None:
    for col in schema.categorical:
        real = real_frame[col].value_counts(normalize=True)
        syn = synthetic[col].value_counts(normalize=True).reindex(real.index, fill_value=0)
        assert (real - syn).abs().max() < 0.015, col


def test_churn_rate_is_the_real_one(synthetic: pd.DataFrame, real_frame: pd.DataFrame,
                                    schema: SchemaSettings, churned) -> None:
    assert churned(synthetic, schema).mean() == pytest.approx(churned(real_frame, schema).mean(), abs=0.01)


def test_rank_correlations_match_the_real_table(synthetic: pd.DataFrame, real_frame: pd.DataFrame,
                                                schema: SchemaSettings) -> None:
    cols = list(schema.numeric)
    diff = (real_frame[cols].corr("spearman") - synthetic[cols].corr("spearman")).abs()
    worst = diff.stack().idxmax()
    assert diff.to_numpy().max() < 0.1, f"largest difference {diff.to_numpy().max():.3f} at {worst}"
    assert diff.to_numpy().mean() < 0.02


def test_categories_keep_their_association_with_numbers(synthetic: pd.DataFrame,
                                                        real_frame: pd.DataFrame) -> None:
    # richer customers and premium cards have higher limits, in the same order as in the real table
    for col in ("Income_Category", "Card_Category"):
        real = real_frame.groupby(col)["Credit_Limit"].median()
        syn = synthetic.groupby(col)["Credit_Limit"].median()
        assert stats.spearmanr(real, syn.reindex(real.index)).statistic > 0.8, col
    # and women hold almost none of the high incomes
    high = synthetic["Income_Category"].isin(["$80K - $120K", "$120K +"])
    assert (synthetic.loc[high, "Gender"] == "F").mean() < 0.05


@pytest.mark.parametrize(
    ("column", "lower_for_churners"),
    [("Total_Trans_Ct", True), ("Total_Trans_Amt", True), ("Total_Revolving_Bal", True),
     ("Total_Ct_Chng_Q4_Q1", True), ("Total_Relationship_Count", True), ("Contacts_Count_12_mon", False),
     ("Months_Inactive_12_mon", False)],
)
def test_churners_differ_as_in_the_real_table(synthetic: pd.DataFrame, real_frame: pd.DataFrame,
                                              schema: SchemaSettings, churned, column: str,
                                              lower_for_churners: bool) -> None:
    def gap(frame: pd.DataFrame) -> float:
        is_churn = churned(frame, schema)
        return frame.loc[is_churn, column].mean() - frame.loc[~is_churn, column].mean()

    real_gap, syn_gap = gap(real_frame), gap(synthetic)
    assert (syn_gap < 0) == lower_for_churners
    assert syn_gap == pytest.approx(real_gap, rel=0.15), f"churner gap: real {real_gap:.3f}, " \
                                                         f"synthetic {syn_gap:.3f}"


@pytest.mark.slow
def test_a_model_trained_on_synthetic_data_ranks_real_customers_well(schema: SchemaSettings,
                                                                     real_frame: pd.DataFrame,
                                                                     churned) -> None:
    """A small XGBoost fitted on 5,000 synthetic rows, scored on the whole real table (real-on-real ~0.99)."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from churnops.data.generate import generate
    from churnops.features import FeatureEncoder

    train = generate(schema, 5000, seed=21)
    encoder = FeatureEncoder.from_schema(schema).fit()
    model = xgb.XGBClassifier(n_estimators=80, max_depth=4, learning_rate=0.15, n_jobs=1)
    model.fit(encoder.transform(train), churned(train, schema).astype(int))
    scores = model.predict_proba(encoder.transform(real_frame))[:, 1]
    assert roc_auc_score(churned(real_frame, schema).astype(int), scores) > 0.95
    assert np.isfinite(scores).all()
