"""Every scored customer's risk drivers are the model's own, exactly as /predict?explain=true gives them
(the same Scorer code), for each model family: XGBoost (SHAP), logistic regression (coefficient x value),
random forest (path attribution on the compiled trees)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.analytics.marts import RunMeta, build_fact
from churnops.settings import load_settings

REPO = Path(__file__).resolve().parents[3]


def _pipeline(kind: str, schema):  # noqa: ANN001, ANN202
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from churnops.features import FeatureEncoder

    encoder = ("encode", FeatureEncoder.from_schema(schema))
    if kind == "logistic_regression":
        return Pipeline([encoder, ("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))])
    if kind == "random_forest":
        return Pipeline([encoder, ("model", RandomForestClassifier(n_estimators=30, max_depth=8,
                                                                   random_state=0, n_jobs=1))])
    return Pipeline([encoder, ("model", xgb.XGBClassifier(n_estimators=60, max_depth=4, n_jobs=1))])


@pytest.fixture(scope="module")
def data():  # noqa: ANN201
    from churnops.data.generate import generate

    settings = load_settings(home=REPO, env={})
    schema = settings.schema
    train = generate(schema, 3000, seed=21)
    customers = generate(schema, 1500, seed=22)
    return settings, train, customers


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression", "random_forest"])
def test_every_customer_gets_the_drivers_that_explain_gives_for_each_model_family(data, kind: str) -> None:
    from churnops.scoring import Scorer

    settings, train, customers = data
    schema = settings.schema
    cfg = settings.params.analytics
    y = (train[schema.target.column] == schema.target.positive).astype(int)
    scorer = Scorer(_pipeline(kind, schema).fit(train[schema.feature_columns], y))
    assert scorer.explains
    frame = customers[[schema.id_column, *schema.feature_columns]].reset_index(drop=True)
    p = scorer.predict_proba_frame(frame)
    levels = settings.params.serving.risk_levels
    scores = pd.DataFrame({
        "customer_id": frame[schema.id_column].astype(str), "churn_probability": p,
        "risk_level": [levels.level(x) for x in p], "anomaly": False, "anomaly_score": 0.0,
        "out_of_range": None})
    meta = RunMeta("r1", datetime(2026, 1, 1, tzinfo=UTC), "1", None)
    fact = build_fact(settings, meta, frame, scores, scorer)

    # every customer has drivers, whatever its level; actions stay with analytics.action_levels
    assert fact.top_drivers.notna().mean() > 0.99
    assert set(fact.risk_level) >= {"High", "Low"}
    acting = fact.risk_level.isin(cfg.action_levels)
    assert fact.recommended_action[acting].notna().all() and fact.recommended_action[~acting].isna().all()

    # a sample of every level: the drivers are the risk-raising contributions of scorer.explain(), the
    # function behind /predict?explain=true, in its order (ratios under their params.yaml names)
    ratio_names = {f"{a}/{b}": name for name, (a, b) in schema.ratios.items()}
    sample = fact.groupby("risk_level").head(15)
    rows = frame.set_index(frame[schema.id_column].astype(str)).loc[sample.customer_id]
    explained = scorer.explain(rows[schema.feature_columns].to_dict("records"))
    for row, contributions in zip(sample.itertuples(), explained, strict=True):
        raising = [c for c in contributions if c.effect > 0][: cfg.top_drivers]
        assert row.top_drivers == (", ".join(ratio_names.get(c.feature, c.feature) for c in raising) or None)
        effects = [float(e) for e in row.driver_effects.split(", ")] if row.driver_effects else []
        np.testing.assert_allclose(effects, [c.effect for c in raising], atol=5e-5)
