"""Batch scoring: the churn_batch_scoring DAG and pipeline.batch with a real champion, SQLite, PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.dags.conftest import dag_run_state, task_states, xcom_value

pytestmark = pytest.mark.integration


def _scores(settings, run_id: str | None = None) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    try:
        query = f"SELECT * FROM {settings.params.batch.table}"
        frame = pd.read_sql(sa.text(query), engine)
    finally:
        engine.dispose()
    return frame if run_id is None else frame[frame.run_id == run_id]


def test_batch_scoring_dag_writes_every_customer_to_the_table_and_parquet_and_lists_the_top(
    airflow_db, dagbag, scoring_home: Path, project_env
) -> None:
    from churnops import registry
    from churnops.settings import load_settings

    project_env(scoring_home)
    settings = load_settings(home=scoring_home)
    dr = dagbag.dags["churn_batch_scoring"].test(run_conf={"top_n": 5})

    assert dag_run_state(dr) == "success", task_states(dr)
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    scores = _scores(settings, dr.run_id)
    assert len(scores) == len(gold) == scores.customer_id.nunique()
    assert set(scores.customer_id) == set(gold[settings.schema.id_column].astype(str))
    assert set(scores.model_version) == {registry.champion_version(settings)}
    levels = settings.params.serving.risk_levels
    for p, level in zip(scores.churn_probability, scores.risk_level, strict=True):
        assert level == levels.level(p)
    assert scores.anomaly.astype(bool).sum() >= 1  # contamination 1%: some customers look unusual
    exported = pd.read_parquet(settings.path(settings.params.batch.export_dir) / "latest.parquet")
    assert len(exported) == len(gold) and set(exported.run_id) == {dr.run_id}
    # the same run refreshed the analytics marts and the BI exports
    import json

    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    try:
        kpi = pd.read_sql(sa.text("SELECT * FROM mart_run_kpi"), engine)
    finally:
        engine.dispose()
    assert list(kpi.run_id) == [dr.run_id] and kpi.customers.iloc[0] == len(gold)
    scored = xcom_value(dr, "score_customers")
    assert scored["kpi"]["customers"] == len(gold) and Path(scored["exports"]).is_dir()
    latest = settings.path(settings.params.analytics.export_dir) / "latest" / "manifest.json"
    assert json.loads(latest.read_text())["run_id"] == dr.run_id
    rows = xcom_value(dr, "top_at_risk")
    assert [r["customer_id"] for r in rows] == list(
        scores.sort_values(["churn_probability", "customer_id"], ascending=[False, True]).customer_id[:5]
    )


def test_rescoring_a_run_replaces_its_rows_and_old_runs_are_pruned(scoring_home: Path) -> None:
    import yaml

    from churnops.settings import load_settings
    from pipeline.batch import latest_run_id, score_customers, top_at_risk

    params = yaml.safe_load((scoring_home / "params.yaml").read_text())
    params["batch"]["keep_runs"] = 2
    (scoring_home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(home=scoring_home)
    first = score_customers(settings, run_id="night-1")
    again = score_customers(settings, run_id="night-1")  # a retried run
    assert len(_scores(settings)) == first.rows == again.rows
    score_customers(settings, run_id="night-2")
    third = score_customers(settings, run_id="night-3")
    assert set(_scores(settings).run_id) == {"night-2", "night-3"}
    assert third.deleted_runs == ["night-1"]
    export_dir = settings.path(settings.params.batch.export_dir)
    assert sorted(p.name for p in export_dir.glob("scores-*.parquet")) == [
        "scores-night-2.parquet",
        "scores-night-3.parquet",
    ]
    assert latest_run_id(settings) == "night-3"
    top = top_at_risk(settings, 3)
    assert [r["customer_id"] for r in top] == [r["customer_id"] for r in third.top[:3]]


def test_a_customer_listed_twice_is_refused_and_the_previous_scores_stay(scoring_home: Path) -> None:
    from churnops.settings import load_settings
    from pipeline.batch import BatchError, score_customers

    settings = load_settings(home=scoring_home)
    score_customers(settings, run_id="good")
    before = _scores(settings).sort_values(["run_id", "customer_id"]).reset_index(drop=True)
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    doubled = scoring_home / "doubled.parquet"  # a customer twice
    pd.concat([gold, gold.iloc[:1]]).to_parquet(doubled, index=False)
    with pytest.raises(BatchError, match="more than once .* left as they were"):
        score_customers(settings, run_id="good", customers=doubled)
    after = _scores(settings).sort_values(["run_id", "customer_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_batch_scoring_refuses_a_tampered_champion_writes_nothing_and_alerts(scoring_home: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from churnops import registry, tracking
    from churnops.settings import load_settings
    from monitoring.alerts import list_outbox
    from monitoring.state import StateDB
    from pipeline.batch import BatchError, score_customers
    from tests.conftest import plant_pickle_model, version_folder

    settings = load_settings(home=scoring_home)
    score_customers(settings, run_id="good")
    before = _scores(settings)
    # the champion logged again as a version of this test's own (the trained home's files stay intact)
    pipeline = registry.load_champion(settings).scorer.pipeline
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    with mlflow.start_run(experiment_id=tracking.configure_tracking(settings)) as run:
        info = tracking.log_model(pipeline, gold, settings)
        mlflow.log_param("threshold", 0.5)
        mlflow.set_tags({tracking.TAG_MODEL_URI: info.model_uri, tracking.TAG_MODEL_ID: info.model_id})
    version = registry.register(settings, run.info.run_id)
    uri = settings.mlflow_tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        settings.params.register_.model_name, "champion", version)
    marker = scoring_home / "marker"
    plant_pickle_model(version_folder(settings, version), marker)

    with pytest.raises(BatchError, match=f"refused to score: model .* version {version}: model files do not "
                                         f"match the SHA-256"):
        score_customers(settings, run_id="tampered")
    assert not marker.exists()
    pd.testing.assert_frame_equal(_scores(settings), before)  # nothing written, nothing lost
    titles = [r["title"] for r in list_outbox(StateDB(settings.path(settings.params.monitoring.state_db)))]
    assert any(f"version {version} refused" in t for t in titles), titles


def test_score_command_writes_to_postgresql_by_url(scoring_home: Path, postgres_url: str) -> None:
    import os

    from churnops.settings import load_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    env["CHURNOPS_DATABASE_URL"] = postgres_url
    churnops = Path(sys.executable).parent / "churnops"
    proc = subprocess.run(
        [str(churnops), "--home", str(scoring_home), "score", "--run-id", "pg-1", "--top", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "most at risk:" in proc.stdout and "pg-1" in proc.stdout
    settings = load_settings(home=scoring_home, env={"CHURNOPS_DATABASE_URL": postgres_url})
    scores = _scores(settings)
    assert len(scores) == len(pd.read_parquet(settings.features_dir / "customers.parquet"))
    assert scores.anomaly.dtype == bool and str(scores.scored_at.dt.tz) == "UTC"


# -- a gold layer with gaps (blank cells in columns with a schema.missing policy) --------------------
def _assert_gaps_scored(settings, scores: pd.DataFrame) -> None:
    """Every customer scored, those with gaps too, each gap filled by the champion's own encoder."""
    import numpy as np

    from churnops import registry
    from tests.conftest import GAP_POLICIES

    schema = settings.schema
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    gaps = gold[list(GAP_POLICIES)].isna()
    assert gaps.sum().min() > 0, "the gold layer keeps the gaps of every policy column"
    assert len(scores) == len(gold) and set(scores.customer_id) == set(gold[schema.id_column].astype(str))
    assert scores.churn_probability.notna().all()
    champion = registry.load_champion(settings)
    assert set(scores.model_version) == {champion.version}
    got = scores.set_index("customer_id").churn_probability
    gapped = gold[gaps.any(axis=1)]
    ids = gapped[schema.id_column].astype(str)
    # the library's own path (the sklearn Pipeline with the encoder's fill values) gives the same numbers
    expected = champion.scorer.pipeline.predict_proba(gapped[schema.feature_columns])[:, 1]
    np.testing.assert_allclose(got.loc[ids].to_numpy(), expected, atol=1e-6)
    # and a gap scores as the value the encoder learned at training (columns without an indicator feature)
    encoder = champion.scorer.encoder
    plain = gapped[~gaps.loc[gapped.index, "Credit_Limit"]]
    assert len(plain) > 0
    filled = plain[schema.feature_columns].fillna(
        {c: encoder.fill_[c] for c in ("Total_Revolving_Bal", "Education_Level")})
    by_fill = champion.scorer.pipeline.predict_proba(filled)[:, 1]
    np.testing.assert_allclose(got.loc[plain[schema.id_column].astype(str)].to_numpy(), by_fill, atol=1e-6)


def test_score_command_scores_a_gold_layer_with_gaps(gaps_scoring_home: Path) -> None:
    import os

    from churnops.settings import load_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    churnops = Path(sys.executable).parent / "churnops"
    proc = subprocess.run([str(churnops), "--home", str(gaps_scoring_home), "score", "--run-id", "gaps-1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = load_settings(home=gaps_scoring_home)
    _assert_gaps_scored(settings, _scores(settings, "gaps-1"))


def test_batch_scoring_dag_scores_a_gold_layer_with_gaps(
    airflow_db, dagbag, gaps_scoring_home: Path, project_env
) -> None:
    from churnops.settings import load_settings

    project_env(gaps_scoring_home)
    dr = dagbag.dags["churn_batch_scoring"].test(run_conf={"top_n": 3})

    assert dag_run_state(dr) == "success", task_states(dr)
    settings = load_settings(home=gaps_scoring_home)
    _assert_gaps_scored(settings, _scores(settings, dr.run_id))
    assert len(xcom_value(dr, "top_at_risk")) == 3
