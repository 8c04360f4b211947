"""Fixtures for the DAG tests: an isolated Airflow metadata DB and project homes with a real pipeline.

Airflow reads its configuration when it is first imported, so AIRFLOW_HOME and the DAGs folder are set
here, at import, before any test module imports airflow: every DAG test in this process uses a throwaway
SQLite metadata DB and the project's own dags/ folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

# the homes (and their fixtures, registered in tests/conftest.py) are shared with tests/pipeline/
from tests.project_homes import ISOLATED_ENV, ROWS, make_project, train_with_cli_path  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_IDS = ("churn_training", "churn_drift_monitor", "churn_batch_scoring")

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="churnops-airflow-tests-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata DB of this test session, created once (what `airflow db migrate` does)."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="session")
def weak_champion_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose champion (v1, logistic regression) was trained on shuffled labels: it learned nothing,
    so a model trained on the real labels of the same kind of table is promoted over it (a clear gain)."""
    import numpy as np
    import pandas as pd

    from churnops.settings import load_settings

    home = make_project(tmp_path_factory.mktemp("weak") / "home",
                        {"train": {"candidates": ["logistic_regression"]}})
    target = load_settings(home=home, env={}).schema.target.column
    frame = pd.read_csv(home / "incoming" / "customers.csv", dtype=str, keep_default_na=False)
    frame[target] = np.random.default_rng(0).permutation(frame[target].to_numpy())
    frame.to_csv(home / "incoming" / "shuffled.csv", index=False)
    report = train_with_cli_path(home, home / "incoming" / "shuffled.csv")
    assert report.get("promotion", {}).get("promoted") and report["registered_version"] == "1", report
    return home


def dag_run_state(dr: Any) -> str:
    return str(getattr(dr.state, "value", dr.state))


def task_states(dr: Any) -> dict[str, str]:
    """task_id (with [map index] for mapped tasks) -> final state of a finished dag.test() run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        return {
            (f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id): str(
                getattr(ti.state, "value", ti.state)
            )
            for ti in tis
        }


def xcom_value(dr: Any, task_id: str, key: str = "return_value") -> Any:
    """What a task of a finished dag.test() run returned (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dr.run_id, dag_ids=dr.dag_id, task_ids=task_id, key=key)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)
