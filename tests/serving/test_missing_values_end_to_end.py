"""Real tables have gaps: a generated table with blank and whitespace-only cells goes through validation,
training (real MLflow registry) and the real server (`churnops serve`), and /predict fills a null or omitted
field with the policy training used (params.yaml schema.missing)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from tests.conftest import GAP_POLICIES, table_with_gaps
from tests.serving.conftest import (
    SERVING_OVERRIDES,
    LiveServer,
    ModelStore,
    deep_merge,
    settings_for,
    write_home,
)

pytestmark = pytest.mark.integration

FAST_XGBOOST = {"candidates": ["xgboost"], "cv_folds": 2, "n_jobs": 1, "search_iterations": {"xgboost": 1}}
XGBOOST_SPACE = {"n_estimators": {"choice": [40]}, "max_depth": {"choice": [3]},
                 "learning_rate": {"choice": [0.2]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, serving_redis: Any) -> ModelStore:
    from sklearn.model_selection import train_test_split

    from churnops import registry
    from churnops.data.ingest import read_table
    from churnops.data.validate import validate_table
    from churnops.models.training import train_candidates
    from pipeline.layers import LABEL, to_gold

    root = tmp_path_factory.mktemp("gaps")
    home = write_home(root / "home", deep_merge(SERVING_OVERRIDES, {
        "schema": {"missing": GAP_POLICIES}, "train": FAST_XGBOOST,
        "feature_store": {"namespace": "churnops-gaps"}}))
    params = yaml.safe_load((home / "params.yaml").read_text())
    params["train"]["search_spaces"] = {"xgboost": XGBOOST_SPACE}  # replaced, not merged
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = settings_for(home, serving_redis.url)
    path = table_with_gaps(settings.schema, root / "customers.csv")

    report = validate_table(read_table(path, settings.schema), settings.schema, settings.params.validate_)
    assert report.ok, report.to_text()
    warned = {i.column: i for i in report.find("missing_values")}
    assert set(warned) == set(GAP_POLICIES) and all(i.severity == "warning" for i in warned.values())
    assert warned["Credit_Limit"].rows == 60 and "imputed by median" in warned["Credit_Limit"].message

    gold = to_gold(report.clean, settings)
    assert gold["Credit_Limit"].isna().sum() == 60  # the gold layer keeps the gaps; the encoder fills them
    train, test = train_test_split(gold, test_size=0.25, stratify=gold[LABEL], random_state=0)
    result = train_candidates(train.reset_index(drop=True), test.reset_index(drop=True), settings,
                              data_version="gaps", git_commit="test")
    decision = registry.register_best(settings, result, test)
    assert decision.promoted
    store = ModelStore(home, settings, gold, [decision.challenger_version])
    store.train = train  # the rows the fill values were learned from
    return store


@pytest.fixture(scope="module")
def server(trained: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Any:
    live = LiveServer(trained, tmp_path_factory.mktemp("gaps-server") / "serve.log", workers=1)
    try:
        live.wait_ready()
    except Exception:
        live.stop()
        raise
    yield live
    live.stop()


def body_of(trained: ModelStore, row: pd.Series) -> dict[str, Any]:
    schema = trained.settings.schema
    out: dict[str, Any] = {}
    for col, spec in schema.numeric.items():
        out[schema.api_field(col)] = int(row[col]) if spec.integer else float(row[col])
    for col in schema.categorical:
        out[schema.api_field(col)] = row[col]
    return out


def test_predict_fills_a_null_or_omitted_field_as_training_did(trained: ModelStore, server: Any) -> None:
    from churnops import registry

    schema = trained.settings.schema
    complete = trained.gold.dropna().iloc[0]
    body = body_of(trained, complete)
    body["credit_limit"] = None
    del body["education_level"]
    answer = requests.post(server.url + "/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text

    # the same row through the library's own path (pandas, sklearn Pipeline, XGBoost): equal
    champion = registry.load_version(trained.settings, trained.versions[0])
    frame = pd.DataFrame([complete[schema.feature_columns]]).astype(object)
    frame.loc[:, ["Credit_Limit", "Education_Level"]] = None
    frame["Credit_Limit"] = frame["Credit_Limit"].astype(float)
    expected = float(champion.scorer.pipeline.predict_proba(frame)[0, 1])
    assert answer.json()["attrition_probability"] == pytest.approx(expected, abs=1e-6)

    assert requests.get(server.url + "/model", timeout=30).json()["scoring"]["path"] == "compiled"

    encoder = champion.scorer.encoder  # what the one-row path fed the compiled trees
    (row,) = encoder.encode_records([{c: complete[c] for c in schema.feature_columns}
                                     | {"Credit_Limit": None, "Education_Level": None}])
    named = dict(zip(encoder.feature_names_, row.tolist(), strict=True))
    assert named["Credit_Limit"] == encoder.fill_["Credit_Limit"] == trained.train["Credit_Limit"].median()
    assert named["Credit_Limit_missing"] == 1.0
    assert named[f"Education_Level={encoder.fill_['Education_Level']}"] == 1


def test_a_customer_with_gaps_in_the_feature_store_is_scored_by_id(trained: ModelStore, server: Any) -> None:
    from churnops import registry
    from churnops.feature_store import FeatureStore

    FeatureStore.from_settings(trained.settings).push(trained.features)  # the gold layer, gaps included
    schema = trained.settings.schema
    gold = trained.gold
    gappy = gold[gold["Credit_Limit"].isna() & gold["Education_Level"].notna()].iloc[0]
    answer = requests.post(server.url + "/predict", json={"customer_id": str(gappy[schema.id_column])},
                           timeout=30)
    assert answer.status_code == 200, answer.text
    champion = registry.load_version(trained.settings, trained.versions[0])
    frame = pd.DataFrame([gappy[schema.feature_columns]])
    frame["Credit_Limit"] = frame["Credit_Limit"].astype(float)
    expected = float(champion.scorer.pipeline.predict_proba(frame)[0, 1])
    assert answer.json()["attrition_probability"] == pytest.approx(expected, abs=1e-6)


def test_a_null_field_without_a_policy_is_refused_by_name(trained: ModelStore, server: Any) -> None:
    body = body_of(trained, trained.gold.dropna().iloc[1])
    body["customer_age"] = None
    del body["gender"]
    answer = requests.post(server.url + "/predict", json=body, timeout=30)
    assert answer.status_code == 422
    assert {(e["field"], e["problem"]) for e in answer.json()} == {
        ("customer_age", "expected an integer, got null"), ("gender", "missing")}


def test_openapi_says_which_fields_may_be_null(server: Any) -> None:
    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    customer = spec["components"]["schemas"]["Customer"]
    props = customer["properties"]
    assert props["credit_limit"]["nullable"] is True and props["education_level"]["nullable"] is True
    assert None in props["education_level"]["enum"]
    assert "nullable" not in props["customer_age"]
    assert {"credit_limit", "education_level", "total_revolving_bal"}.isdisjoint(customer["required"])
    assert "customer_age" in customer["required"]
