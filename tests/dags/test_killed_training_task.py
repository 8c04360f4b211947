"""A churn_training run whose training is killed on a real Airflow (`airflow standalone`): the (mapped)
train_candidate task is marked failed over the REST API while it trains, as an operator does in the UI
(Airflow then ends the task with SIGTERM); with no candidate finished, the run fails. restore_on_failure
puts the raw table and its .dvc pointer back, the project's layers, reports and
champion were never touched, nothing of the killed task keeps running, and the next run succeeds."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest

from tests.pipeline.conftest import state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNING_TIMEOUT_S = 900


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid}: {' '.join(proc.cmdline())[:200]}")
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_killed_training_task_restores_the_previous_data_and_the_next_run_succeeds(
    trained_home: Path, tmp_path: Path, project_env
) -> None:
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings
    from pipeline.airflow_local import LocalAirflow
    from pipeline.processes import free_port

    home = tmp_path / "home"
    shutil.copytree(trained_home, home, symlinks=True)
    project_env(home)
    settings = load_settings(home=home)
    new_data = generate_to_csv(settings.schema, rows=1500, seed=21, out=tmp_path / "new.csv")
    before = state(home)
    local = LocalAirflow(project_home=home, port=free_port(), parallelism=2)
    try:
        info = local.start(timeout_s=600)
        api = local.api(timeout_s=90)  # the machine is shared: Airflow may answer slowly
        baseline = _descendants(info["pid"])
        run = api.trigger("churn_training", {"data_path": str(new_data), "candidates": ["xgboost"],
                                             "search_iterations": 40, "reason": "killed mid-training"})
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {ti["task_id"]: ti["state"] for ti in api.task_instances("churn_training", run_id)}
            if states.get("train_candidate") == "running":
                break
            assert states.get("train_candidate") not in ("success", "failed", "upstream_failed"), states
            time.sleep(2)
        else:
            raise AssertionError(f"train never ran: {states}\n{local.log_file.read_text()[-4000:]}")
        time.sleep(1)  # the task has started (40 settings to search: it is far from done)
        task_processes = _descendants(info["pid"]) - baseline
        assert api.dag_run("churn_training", run_id)["state"] == "running"
        raw_during = state(home)["data/raw/customers.csv.dvc"]
        assert raw_during != before["data/raw/customers.csv.dvc"]  # the new data version is in place

        api.set_task_state("churn_training", run_id, "train_candidate", "failed")  # every mapped instance

        final = api.wait_for_run("churn_training", run_id, timeout_s=600, poll_s=3)
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances("churn_training", run_id)}
        assert final["state"] == "failed", states
        assert states["train_candidate"] == "failed" and states["register"] == "upstream_failed", states
        assert states["restore_on_failure"] == "success", states
        assert state(home) == before  # raw, .dvc, layers, reports, @champion: as before the run
        gone_by = time.monotonic() + 60
        while _alive(task_processes) and time.monotonic() < gone_by:
            time.sleep(1)
        assert _alive(task_processes) == [], "processes of the killed task still run"

        conf = {"data_path": str(new_data), "candidates": ["logistic_regression"], "search_iterations": 1,
                "reason": "after the killed run"}
        again = api.trigger("churn_training", conf)
        final = api.wait_for_run("churn_training", again["dag_run_id"], timeout_s=1200, poll_s=5)
        assert final["state"] == "success", local.log_file.read_text()[-4000:]
    finally:
        assert local.stop(timeout_s=90)
