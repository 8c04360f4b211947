"""Batch scoring (pipeline/batch.py through `churnops score`) with a real champion: reruns replace their rows,
bad input and a tampered champion change nothing, PostgreSQL by URL, a gold layer with gaps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.project_homes import assert_gaps_scored, scores_in

pytestmark = pytest.mark.integration


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
    assert len(scores_in(settings)) == first.rows == again.rows
    score_customers(settings, run_id="night-2")
    third = score_customers(settings, run_id="night-3")
    assert set(scores_in(settings).run_id) == {"night-2", "night-3"}
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
    before = scores_in(settings).sort_values(["run_id", "customer_id"]).reset_index(drop=True)
    gold = pd.read_parquet(settings.features_dir / "customers.parquet")
    doubled = scoring_home / "doubled.parquet"  # a customer twice
    pd.concat([gold, gold.iloc[:1]]).to_parquet(doubled, index=False)
    with pytest.raises(BatchError, match="more than once .* left as they were"):
        score_customers(settings, run_id="good", customers=doubled)
    after = scores_in(settings).sort_values(["run_id", "customer_id"]).reset_index(drop=True)
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
    before = scores_in(settings)
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
    pd.testing.assert_frame_equal(scores_in(settings), before)  # nothing written, nothing lost
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
    scores = scores_in(settings)
    assert len(scores) == len(pd.read_parquet(settings.features_dir / "customers.parquet"))
    assert scores.anomaly.dtype == bool and str(scores.scored_at.dt.tz) == "UTC"


def test_score_command_scores_a_gold_layer_with_gaps(gaps_scoring_home: Path) -> None:
    import os

    from churnops.settings import load_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
    churnops = Path(sys.executable).parent / "churnops"
    proc = subprocess.run([str(churnops), "--home", str(gaps_scoring_home), "score", "--run-id", "gaps-1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = load_settings(home=gaps_scoring_home)
    assert_gaps_scored(settings, scores_in(settings, "gaps-1"))


