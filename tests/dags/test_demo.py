"""`churnops demo` with its own Airflow: the drifted batch through /predict, the drift check triggering
`churn_training` over the REST API (monitoring/retrain.py), the run followed to the promotion gate's
decision, and Airflow stopped afterwards. Real Airflow, Redis, HTTP server and MLflow store; one Airflow
start for the whole file."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.project_homes import make_project

ROWS = 1500
# One candidate keeps the two trainings (the demo's and the retraining) to seconds; its budget (2 settings,
# 3 folds) equals the demo's retraining budget, so the retraining reproduces the champion exactly.
LR_ONLY = {"train": {"candidates": ["logistic_regression"]}}


@pytest.mark.integration
@pytest.mark.slow
def test_demo_drift_triggers_a_retraining_run_in_its_own_airflow(
    tmp_path: Path, project_env, capfd: pytest.CaptureFixture[str]
) -> None:
    from churnops import registry
    from churnops.settings import load_settings
    from monitoring.retrain import list_triggers
    from monitoring.state import StateDB
    from pipeline.demo import run_demo
    from pipeline.processes import group_alive

    home = make_project(tmp_path / "home", overrides=LR_ONLY)
    project_env(home)
    settings = load_settings(home=home)
    started = time.monotonic()
    results = run_demo(settings, rows=ROWS, seed=5, airflow_port=free_port(), retrain_timeout_s=900)
    wall = time.monotonic() - started
    out = capfd.readouterr().out
    airflow, retraining = results.get("airflow") or {}, results.get("retraining") or {}
    print(f"demo {wall:.0f} s, Airflow start {airflow.get('start_s')} s, retraining run "
          f"{retraining.get('seconds')} s")

    assert airflow.get("started"), (airflow, out[-3000:])
    assert results["drift_exit_code"] == 3, out[-3000:]  # drift, and the retraining trigger worked
    assert "alert: alert_id=" in out  # what on-call receives

    # the drift check triggered churn_training over the REST API, and the demo followed the run to its end
    assert retraining.get("status") == "triggered", retraining
    assert retraining.get("state") == "success", (retraining, out[-5000:])
    tasks = retraining["tasks"]
    assert tasks.pop("restore_on_failure") == "skipped"
    assert set(tasks.values()) == {"success"}, tasks
    [trigger] = list_triggers(StateDB(settings.path(settings.params.monitoring.state_db)))
    assert trigger["status"] == "triggered" and trigger["dag_run_id"] == retraining["dag_run_id"]
    assert retraining["dag_run_id"].startswith("drift__")  # the run id monitoring/retrain.py gives
    run_dir = home / "data" / "runs" / retraining["dag_run_id"]
    run_report = json.loads((run_dir / "run_report.json").read_text())
    assert run_report["reason"].startswith("input drift") and run_report["conf"]["drift"]["status"] == "drift"
    run_params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert run_params["train"] == settings.raw_params["train"]  # one search budget: the project's own
    assert not (home / "airflow-home" / "demo-params.yaml").exists()

    # the gate's outcome: same data, same budget -> the same model, which does not beat the champion
    assert retraining["promoted"] is False, retraining
    assert retraining["registered_version"] == "2" and retraining["champion"] == "1"
    assert registry.champion_version(settings) == "1"
    assert "outcome: not promoted: the promotion gate kept version 1" in out
    password = json.loads((home / "airflow-home" / "passwords.json").read_text())["admin"]
    assert f"UI {airflow['url']}  login admin / {password}" in out
    assert f"run in the UI: {airflow['url']}/dags/churn_training/runs/{retraining['dag_run_id']}" in out

    # Airflow was stopped: no state file, no process of its group left
    assert not (home / "airflow-home" / "standalone.json").exists()
    assert not group_alive(airflow["pid"])


def test_airflow_that_cannot_start_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    from churnops.settings import load_settings
    from pipeline.demo import start_airflow

    home = tmp_path / "home"
    home.mkdir()
    (home / "params.yaml").write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        airflow, why = start_airflow(load_settings(home=home, env={}), serving_url=None, port=port)
    assert airflow is None
    assert f"port {port} is in use" in why and "--port" in why
    assert not (home / "airflow-home" / "standalone.json").exists()
