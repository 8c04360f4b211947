"""The churn_batch_scoring DAG with a real champion: every customer scored into the table and Parquet, the top
listed, and a gold layer with gaps scored by the champion's own encoder (the batch run itself:
tests/pipeline/test_batch.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.dags.conftest import dag_run_state, task_states, xcom_value
from tests.project_homes import assert_gaps_scored, scores_in

pytestmark = pytest.mark.integration


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
    scores = scores_in(settings, dr.run_id)
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


def test_batch_scoring_dag_scores_a_gold_layer_with_gaps(
    airflow_db, dagbag, gaps_scoring_home: Path, project_env
) -> None:
    from churnops.settings import load_settings

    project_env(gaps_scoring_home)
    dr = dagbag.dags["churn_batch_scoring"].test(run_conf={"top_n": 3})

    assert dag_run_state(dr) == "success", task_states(dr)
    settings = load_settings(home=gaps_scoring_home)
    assert_gaps_scored(settings, scores_in(settings, dr.run_id))
    assert len(xcom_value(dr, "top_at_risk")) == 3
