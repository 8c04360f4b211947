"""A real `airflow standalone` started by `pipeline.airflow_local`, churn_training triggered over the REST API
exactly as the UI does it, followed to success, then Airflow stopped with every process of its group gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.project_homes import make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_training_triggered_over_the_rest_api_registers_a_champion(tmp_path: Path, project_env) -> None:
    from churnops import registry
    from churnops.settings import load_settings
    from pipeline.airflow_local import LocalAirflow
    from pipeline.processes import group_alive

    home = make_project(tmp_path / "home", rows=1000)
    project_env(home)
    local = LocalAirflow(project_home=home, port=free_port(), parallelism=2)
    pgid = None
    try:
        info = local.start(timeout_s=600)
        pgid = info["pid"]
        assert {"churn_training", "churn_drift_monitor", "churn_batch_scoring"} <= set(info["dags"])
        assert info["health"]["scheduler"]["status"] == "healthy"
        api = local.api()
        assert api.dag("churn_training")["is_paused"] is True  # new DAGs start paused
        # what the UI's trigger form sends: unpause, then POST a run with logical_date null and the conf
        run = api.trigger(
            "churn_training",
            {
                "data_path": "incoming/customers.csv",
                "candidates": ["logistic_regression", "xgboost"],
                "search_iterations": 1,
                "reason": "triggered over the REST API",
            },
        )
        final = api.wait_for_run("churn_training", run["dag_run_id"], timeout_s=1200, poll_s=5)
        tis = api.task_instances("churn_training", run["dag_run_id"])
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert final["state"] == "success", (states, local.log_file.read_text()[-5000:])
        # the LocalExecutor ran one mapped train task per candidate, named after it in the UI
        mapped = sorted((ti["map_index"], ti.get("rendered_map_index"), ti["state"])
                        for ti in tis if ti["task_id"] == "train_candidate")
        assert mapped == [(0, "logistic_regression", "success"), (1, "xgboost", "success")], mapped
        assert states["restore_on_failure"] == "skipped"
        report = api.xcom("churn_training", run["dag_run_id"], "report")
        assert report["reason"] == "triggered over the REST API"
        champion = registry.champion_info(load_settings(home=home))
        assert champion is not None and champion["candidate"] in ("logistic_regression", "xgboost")
        assert report["training"]["failed_candidates"] == []
        assert report["registry"]["champion"] == champion["version"]
        # task logs carry churnops' structured fields, not just event names
        logs = "\n".join(p.read_text(errors="replace") for p in (local.home / "logs").rglob("*.log"))
        assert "data.versioned" in logs and "data_version=" in logs
        assert "register.done" in logs and "promoted=True" in logs
        assert "progress task=" in logs and "search xgboost" in logs and "eta_s=" in logs  # search progress
    finally:
        stopped = local.stop(timeout_s=90)
    assert stopped
    assert pgid is not None and not group_alive(pgid), "every process of the standalone's group is gone"
    assert not local.state_file.exists()
    assert os.environ["CHURNOPS_HOME"] == str(home)
