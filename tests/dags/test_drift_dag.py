"""churn_drift_monitor end to end with dag.test(): a real prediction log in Redis, the champion's reference
in MLflow, the monitoring state DB, and the training DAG triggered through TriggerDagRunOperator."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.dags.conftest import dag_run_state, task_states

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def monitored_home(trained_home: Path, tmp_path: Path, project_env) -> Path:
    home = tmp_path / "home"
    shutil.copytree(trained_home, home, symlinks=True)
    project_env(home)
    return home


def log_predictions(home: Path, rows: int, seed: int, shift: dict[str, float] | None = None) -> None:
    """What /predict writes: `rows` scored customers in the prediction log (drifted when `shift` is given)."""
    from churnops import registry
    from churnops.data.generate import DriftSpec, generate
    from churnops.prediction_log import PredictionLog
    from churnops.settings import load_settings

    settings = load_settings(home=home)
    frame = generate(settings.schema, rows=rows, seed=seed, drift=DriftSpec(shifts=shift or {}))
    records = frame[settings.schema.feature_columns].to_dict("records")
    version = registry.champion_version(settings)
    now = time.time()
    entries = [
        (now + i * 1e-3, version, 0.5, str(cid), rec)
        for i, (cid, rec) in enumerate(zip(frame[settings.schema.id_column], records, strict=True))
    ]
    log = PredictionLog.from_settings(settings)
    log.write(entries)


def triggers(home: Path) -> list[dict]:
    from churnops.settings import load_settings
    from monitoring.retrain import list_triggers
    from monitoring.state import StateDB

    settings = load_settings(home=home)
    return list_triggers(StateDB(settings.path(settings.params.monitoring.state_db)))


def test_drift_alerts_on_call_and_triggers_training_once_per_cooldown(
    airflow_db, dagbag, monitored_home
) -> None:
    from airflow.models.dagrun import DagRun

    from churnops.settings import load_settings
    from monitoring.alerts import list_outbox
    from monitoring.state import StateDB

    log_predictions(monitored_home, rows=600, seed=21, shift={"Total_Trans_Ct": 1.5})
    dag = dagbag.dags["churn_drift_monitor"]

    dr = dag.test()

    states = task_states(dr)
    assert dag_run_state(dr) == "success", states
    assert set(states.values()) == {"success"}, states
    [trigger] = triggers(monitored_home)
    assert trigger["status"] == "triggered" and "Total_Trans_Ct" in trigger["reason"]
    [training_run] = DagRun.find(dag_id="churn_training", run_id=trigger["dag_run_id"])
    conf = training_run.conf
    assert "Total_Trans_Ct" in conf["drift"]["drifted_features"]
    assert conf["reason"] == trigger["reason"] and conf["report"].endswith("drift.json")
    settings = load_settings(home=monitored_home)
    alerts = list_outbox(StateDB(settings.path(settings.params.monitoring.state_db)))
    # delivered on the log channel; the HTTP channels without their URL keep the alert waiting for it
    delivered = [a for a in alerts if a["status"] == "delivered"]
    assert len(delivered) == 1 and delivered[0]["channel"] == "log" and "drift" in delivered[0]["title"]
    assert {a["alert_id"] for a in alerts} == {delivered[0]["alert_id"]}

    # drift again within the cooldown: alert suppressed as a duplicate, no second training run
    dr2 = dag.test()

    states = task_states(dr2)
    assert dag_run_state(dr2) == "success", states
    assert states["drift_tests"] == "success" and states["alert_on_call"] == "success", states
    assert states["decide_retraining"] == "skipped" and states["trigger_training"] == "skipped"
    assert [t["status"] for t in triggers(monitored_home)] == ["suppressed", "triggered"]
    assert len(DagRun.find(dag_id="churn_training", run_id=trigger["dag_run_id"])) == 1


def test_a_window_without_drift_ends_green_and_quiet(airflow_db, dagbag, monitored_home) -> None:
    log_predictions(monitored_home, rows=600, seed=22)

    dr = dagbag.dags["churn_drift_monitor"].test()

    states = task_states(dr)
    assert dag_run_state(dr) == "success", states
    assert states["drift_tests"] == "success" and states["drift_found"] == "success"
    for task_id in ("alert_on_call", "decide_retraining", "trigger_training"):
        assert states[task_id] == "skipped", states
    assert triggers(monitored_home) == []
    report = next((monitored_home / "reports" / "drift" / "runs").glob("*/drift.json"))
    assert '"status": "no_drift"' in report.read_text()


def test_a_window_too_small_to_test_is_skipped_not_failed(airflow_db, dagbag, monitored_home) -> None:
    log_predictions(monitored_home, rows=50, seed=23, shift={"Total_Trans_Ct": 3.0})

    dr = dagbag.dags["churn_drift_monitor"].test()

    states = task_states(dr)
    assert dag_run_state(dr) == "success", states
    assert states["drift_tests"] == "skipped", states
    assert triggers(monitored_home) == []
