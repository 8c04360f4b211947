"""`source: transactions` through the training pipeline: real `churnops` CLI, real DVC, real MLflow store.

The raw transactions are versioned by DVC, the validate stage builds the per-customer table of
``transactions.schema`` from them, the split holds out the latest cut-off, and the model is registered under
its own name behind the same gate. Bad input stops the run naming what is wrong and leaves the previous
data, layers and champion as they were. One project home per module; the tests run in file order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.pipeline.conftest import make_project, run_cli, settings_of, state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUSTOMERS = 1500


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = make_project(tmp_path_factory.mktemp("transactions") / "home", {"source": "transactions"})
    run_cli(home, "data", "generate", "--kind", "transactions", "--customers", str(CUSTOMERS), "--seed", "5",
            "--out", "incoming/lines.csv")
    return home


def test_train_versions_the_transactions_and_registers_the_sources_own_champion(home: Path) -> None:
    report = json.loads(run_cli(home, "train", "--data", "incoming/lines.csv", "--json").stdout)

    pointer = yaml.safe_load((home / "data/raw/transactions.csv.dvc").read_text())
    assert report["data_version"] == pointer["outs"][0]["md5"]
    assert not (home / "data/raw/customers.csv").exists()
    assert report["validation"]["ok"] is True
    assert report["promotion"]["promoted"] is True and report["champion"] == "1"

    settings = settings_of(home)
    assert settings.model_name == "churn-classifier-transactions"
    champion = json.loads(run_cli(home, "models", "champion", "--json").stdout)
    assert str(champion["version"]) == "1" and champion["data_version"] == report["data_version"]
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a registry URI another test set
    assert [m.name for m in client.search_registered_models()] == ["churn-classifier-transactions"]

    # the raw lines' own report, and the customer table's
    lines_report = json.loads((home / "reports/transactions_validation.json").read_text())
    assert lines_report["ok"] is True and lines_report["kept"] < lines_report["rows"]
    metrics = json.loads((home / "reports/metrics.json").read_text())
    assert metrics["best"]["roc_auc"] > 0.7


def test_the_split_holds_out_the_latest_cutoff(home: Path) -> None:
    settings = settings_of(home)
    train = pd.read_parquet(home / "data/features/train.parquet")
    test = pd.read_parquet(home / "data/features/test.parquet")
    schema = settings.schema
    assert list(train.columns) == [*schema.key_columns, *schema.feature_columns, "churn"]
    assert test["cutoff"].nunique() == 1
    holdout = test["cutoff"].iloc[0]
    assert train["cutoff"].max() < holdout
    assert train["cutoff"].nunique() == settings.params.transactions.cutoffs.count
    # every training row's label window ends before the hold-out's cut-off
    horizon = pd.Timedelta(days=settings.params.transactions.horizon_days)
    assert (pd.to_datetime(train["cutoff"]) + horizon <= pd.Timestamp(holdout)).all()
    # a customer appears at several cut-offs, once at each
    assert train.duplicated(["customer_id", "cutoff"]).sum() == 0
    assert train["customer_id"].duplicated().any()


@pytest.mark.parametrize(
    ("case", "message"),
    [("wrong_columns", "the quantity column is missing"),
     ("future_dates", "future_date"),
     ("long_horizon", "horizon_days (2000) is longer than the history")],
)
def test_bad_input_stops_the_run_naming_it_and_keeps_data_layers_and_champion(
        home: Path, case: str, message: str) -> None:
    before = state(home)
    lines = pd.read_csv(home / "incoming/lines.csv", dtype=str, keep_default_na=False)
    params_before = (home / "params.yaml").read_text()
    if case == "wrong_columns":
        lines = lines.drop(columns=["Quantity"])
    elif case == "future_dates":
        lines.loc[10, "InvoiceDate"] = "2099-01-01 10:00:00"
    else:
        params = yaml.safe_load(params_before)
        params["transactions"]["horizon_days"] = 2000
        (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bad = home / "incoming" / f"{case}.csv"
    lines.to_csv(bad, index=False)
    try:
        proc = run_cli(home, "train", "--data", str(bad), check=False)
    finally:
        (home / "params.yaml").write_text(params_before)

    assert proc.returncode == 1
    assert message in proc.stderr
    assert state(home) == before


# -- serving, drift and batch scoring on the transactional source ------------------------------------------
def test_serving_scores_the_transactional_features_by_payload_and_by_id(home: Path, redis_url: str) -> None:
    from churnops.feature_store import FeatureStore
    from churnops.settings import load_settings
    from churnops.transactions.build import current_features
    from serving.app import create_app
    from serving.auth import Auth
    from serving.openapi import example_request

    settings = load_settings(home=home, env={"REDIS_URL": redis_url})
    pushed = FeatureStore.from_settings(settings).push_current(settings)
    current = current_features(settings)
    assert pushed.rows == len(current) and not current["customer_id"].duplicated().any()

    app = create_app(settings, background=False, auth=Auth(env={}))
    client = app.test_client()
    try:
        body = example_request(settings)
        assert set(body) == set(settings.schema.feature_columns)
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["model_version"] == "1"
        assert 0.0 <= answer.get_json()["attrition_probability"] <= 1.0

        customer = str(current["customer_id"].iloc[3])
        by_id = client.post("/predict", json={"customer_id": customer})
        assert by_id.status_code == 200, by_id.get_json()
        assert by_id.get_json()["customer_id"] == customer

        refused = client.post("/predict", json={**body, "customer_age": 45})  # a BankChurners field
        assert refused.status_code == 422 and "customer_age" in json.dumps(refused.get_json())
        fields = json.dumps(client.get("/openapi.json").get_json())
        assert "recency_days" in fields and "Total_Trans_Ct" not in fields
    finally:
        app.extensions["churnops"].close()


def test_drift_check_reads_a_window_of_raw_lines(home: Path) -> None:
    run_cli(home, "data", "generate", "--kind", "transactions", "--customers", str(CUSTOMERS), "--seed", "6",
            "--out", "incoming/drifted.csv", "--drift", "purchase_rate=0.3", "--drift", "basket_size=3")
    drifted = run_cli(home, "drift", "check", "--current", "incoming/drifted.csv", "--no-alert",
                      "--no-retrain", "--json", check=False)
    assert drifted.returncode == 3, drifted.stderr[-2000:]
    report = json.loads(drifted.stdout)
    assert report["source"]["kind"] == "transactions" and report["drift"] is True
    assert set(report["drifted_features"]) & {"frequency", "avg_items_per_invoice", "recency_days"}


def test_batch_scoring_scores_every_current_customer_with_transactional_analytics(home: Path) -> None:
    done = json.loads(run_cli(home, "score", "--json").stdout)
    from churnops.transactions.build import current_features

    assert done["rows"] == len(current_features(settings_of(home)))
    assert done["model_version"] == "1"
    assert done["kpi"]["revenue_at_risk"] > 0  # churn probability x monetary (transactions.analytics)
