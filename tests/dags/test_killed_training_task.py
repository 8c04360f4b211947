"""churn_training runs whose tasks are killed on a real Airflow (`airflow standalone`, one for the module):
a task is marked failed over the REST API while it runs, as an operator does in the UI, and Airflow ends it
(SIGTERM, then SIGKILL). restore_on_failure puts back everything the run changed, nothing of the killed task
keeps running, and the next run succeeds.

- train_candidate killed while it trains: the raw table and its .dvc pointer come back; the project's layers,
  reports and champion were never touched.
- register killed after it moved @champion (the commit point): the champion, and every alias the run moved,
  go back as well (a recorded rollback), as `churnops train` does when its register stage is stopped.

The module's home starts from a champion that learned nothing (tests/dags/conftest.py weak_champion_home),
so a model trained on real labels is promoted over it: register moves @champion for certain.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.pipeline.conftest import state
from tests.project_homes import ISOLATED_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNNING_TIMEOUT_S = 900


@dataclass
class Standalone:
    home: Path
    local: Any  # pipeline.airflow_local.LocalAirflow
    pid: int  # its process group
    api: Any  # churnops.airflow_rest.AirflowAPI


@pytest.fixture(scope="module")
def standalone(weak_champion_home: Path, tmp_path_factory: pytest.TempPathFactory,
               _dags_redis_server: str | None) -> Iterator[Standalone]:
    """One `airflow standalone` for the tests of this module, on a copy of the weak champion's home."""
    from pipeline.airflow_local import LocalAirflow
    from pipeline.processes import free_port

    home = tmp_path_factory.mktemp("killed") / "home"
    shutil.copytree(weak_champion_home, home, symlinks=True)
    redis_url = _dags_redis_server or os.environ.get("CHURNOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    with pytest.MonkeyPatch.context() as mp:  # what the standalone, and so every task, runs with
        for var in ISOLATED_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("CHURNOPS_HOME", str(home))
        mp.setenv("REDIS_URL", redis_url)
        local = LocalAirflow(project_home=home, port=free_port(), parallelism=2)
        try:
            info = local.start(timeout_s=600)
            # the machine is shared: Airflow may answer slowly
            yield Standalone(home, local, info["pid"], local.api(timeout_s=90))
        finally:
            assert local.stop(timeout_s=90)


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


def _wait_running(airflow: Standalone, run_id: str, task_id: str, poll_s: float = 2) -> dict[str, Any]:
    """The task instance of `task_id` once it runs (fails the test if the run gets past it first)."""
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    tis: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        tis = {ti["task_id"]: ti for ti in airflow.api.task_instances("churn_training", run_id)}
        found = tis.get(task_id) or {}
        if found.get("state") == "running":
            return found
        assert found.get("state") not in ("success", "failed", "upstream_failed"), tis
        time.sleep(poll_s)
    raise AssertionError(f"{task_id} never ran: { {t: ti['state'] for t, ti in tis.items()} }\n"
                         f"{airflow.local.log_file.read_text()[-4000:]}")


def _task_process(airflow: Standalone, ti_id: str, timeout_s: float = 120) -> psutil.Process:
    """The process running task instance `ti_id` (Airflow titles it `airflow worker -- <ti id>`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in _descendants(airflow.pid):
            try:
                proc = psutil.Process(pid)
                title = " ".join(proc.cmdline()).strip()
            except psutil.NoSuchProcess:
                continue
            if title == f"airflow worker -- {ti_id}":
                return proc
        time.sleep(0.2)
    raise AssertionError(f"no process runs task instance {ti_id}")


def test_a_killed_training_task_restores_the_previous_data_and_the_next_run_succeeds(
    standalone: Standalone, tmp_path: Path
) -> None:
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    home, api = standalone.home, standalone.api
    settings = load_settings(home=home)
    new_data = generate_to_csv(settings.schema, rows=1500, seed=21, out=tmp_path / "new.csv")
    before = state(home)
    baseline = _descendants(standalone.pid)
    run = api.trigger("churn_training", {"data_path": str(new_data), "candidates": ["xgboost"],
                                         "search_iterations": 40, "reason": "killed mid-training"})
    run_id = run["dag_run_id"]
    _wait_running(standalone, run_id, "train_candidate")
    time.sleep(1)  # the task has started (40 settings to search: it is far from done)
    task_processes = _descendants(standalone.pid) - baseline
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

    # a margin no model reaches: the weak champion stays for the next test, which needs a promotion
    conf = {"data_path": str(new_data), "candidates": ["logistic_regression"], "search_iterations": 1,
            "promotion_margin": 1.0, "reason": "after the killed run"}
    again = api.trigger("churn_training", conf)
    final = api.wait_for_run("churn_training", again["dag_run_id"], timeout_s=1200, poll_s=5)
    assert final["state"] == "success", standalone.local.log_file.read_text()[-4000:]


def _stop_once_champion_moves(db: Path, model: str, champion: str | None, worker: psutil.Process,
                              timeout_s: float = 600) -> str:
    """Watch @champion in the MLflow store (SQLite) until register moves it, then stop register's process
    (SIGSTOP) right there: each look holds an exclusive lock on the store, so once the move is seen the
    task cannot take its next step before it is stopped. Returns the new champion."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            conn.execute("BEGIN EXCLUSIVE")
            try:
                row = conn.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND "
                                   "alias = 'champion'", (model,)).fetchone()
                if row is not None and str(row[0]) != champion:
                    worker.suspend()
                    return str(row[0])
            finally:
                conn.execute("ROLLBACK")
            assert worker.is_running(), "register ended without moving @champion"
            time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError(f"register did not move @champion within {timeout_s:.0f} s")


def _aliases(settings: Any) -> dict[str, str]:
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    model = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(
        settings.params.register_.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_a_register_task_killed_after_it_moved_the_champion_puts_the_champion_back(
    standalone: Standalone, tmp_path: Path
) -> None:
    from churnops import registry
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    home, api = standalone.home, standalone.api
    settings = load_settings(home=home)
    good = generate_to_csv(settings.schema, rows=1500, seed=22, out=tmp_path / "good.csv")
    before = state(home)
    aliases_before = _aliases(settings)
    assert before["@champion"] is not None
    run = api.trigger("churn_training", {"data_path": str(good), "candidates": ["logistic_regression"],
                                         "search_iterations": 1, "reason": "killed after the gate"})
    run_id = run["dag_run_id"]
    worker = _task_process(standalone, _wait_running(standalone, run_id, "register", poll_s=0.5)["id"])
    try:
        db = Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
        moved_to = _stop_once_champion_moves(db, settings.params.register_.model_name, before["@champion"],
                                             worker)
        assert registry.champion_version(settings) == moved_to != before["@champion"]

        api.set_task_state("churn_training", run_id, "register", "failed")  # Airflow ends the task

        final = api.wait_for_run("churn_training", run_id, timeout_s=600, poll_s=3)
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances("churn_training", run_id)}
        assert final["state"] == "failed", states
        assert states["register"] == "failed" and states["publish"] == "upstream_failed", states
        assert states["restore_on_failure"] == "success", states
        gone_by = time.monotonic() + 60
        while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE and time.monotonic() < gone_by:
            time.sleep(1)
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, "register still runs"
    finally:
        if worker.is_running():
            worker.kill()
    assert state(home) == before  # raw, .dvc, layers, reports and @champion as before the run
    assert _aliases(settings) == aliases_before  # @challenger too
    restored = api.xcom("churn_training", run_id, "restore_on_failure")
    assert restored["aliases"]["champion"] == before["@champion"]
