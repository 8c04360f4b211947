"""Fixtures for the DAG tests: an isolated Airflow metadata DB and project homes with a real pipeline.

Airflow reads its configuration when it is first imported, so AIRFLOW_HOME and the DAGs folder are set
here, at import, before any test module imports airflow: every DAG test in this process uses a throwaway
SQLite metadata DB and the project's own dags/ folder.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FAST_TRAIN, deep_merge

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_IDS = ("churn_training", "churn_drift_monitor", "churn_batch_scoring")
ROWS = 1500

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

# Variables that would point a test's pipeline at someone else's stores.
ISOLATED_ENV = (
    "CHURNOPS_HOME",
    "CHURNOPS_PARAMS",
    "MLFLOW_TRACKING_URI",
    "CHURNOPS_ARTIFACT_ROOT",
    "CHURNOPS_DVC_REMOTE",
    "CHURNOPS_DATABASE_URL",
    "CHURNOPS_SERVING_URL",
    "REDIS_URL",
    "CHURNOPS_AIRFLOW_URL",
    "CHURNOPS_AIRFLOW_PASSWORD",
    "CHURNOPS_AIRFLOW_DB_URL",
    "CHURNOPS_ALERT_WEBHOOK_URL",
    "CHURNOPS_SLACK_WEBHOOK_URL",
    "CHURNOPS_ALERTMANAGER_URL",
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


def make_project(
    root: Path, overrides: dict[str, Any] | None = None, rows: int = ROWS, seed: int = 3
) -> Path:
    """A project home: params.yaml (fast budgets), the repo's dvc.yaml, and an incoming generated CSV."""
    from churnops.data.generate import generate_to_csv
    from churnops.settings import load_settings

    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"] = {**params["train"], **copy.deepcopy(FAST_TRAIN)}  # whole spaces: merging would mix them
    params = deep_merge(params, {"monitoring": {"min_window": 200}})
    params = deep_merge(params, overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    settings = load_settings(home=root, env={})
    generate_to_csv(settings.schema, rows=rows, seed=seed, out=root / "incoming" / "customers.csv")
    return root


@pytest.fixture(scope="session")
def _dags_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A redis-server of this test session's own. Other sessions' tests flush the shared test database
    (db 15) whenever they start, which would wipe a prediction log between two DAG runs of one test."""
    from tests.conftest import RedisProcess

    if shutil.which("redis-server") is None:
        yield None
        return
    server = RedisProcess(tmp_path_factory.mktemp("dags-redis")).start()
    try:
        yield server.url
    finally:
        server.stop(save=False)


@pytest.fixture
def dags_redis_url(_dags_redis_server: str | None, request: pytest.FixtureRequest) -> str:
    """A real, empty Redis for one test: the session's own server, else the shared test database."""
    import redis

    if _dags_redis_server is None:
        return request.getfixturevalue("redis_url")
    redis.Redis.from_url(_dags_redis_server).flushdb()
    return _dags_redis_server


@pytest.fixture
def project_env(monkeypatch: pytest.MonkeyPatch, dags_redis_url: str) -> Callable[[Path], None]:
    """Point the process (and so the tasks dag.test() runs in it) at a project home and the test Redis."""

    def _use(home: Path) -> None:
        for var in ISOLATED_ENV:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("CHURNOPS_HOME", str(home))
        monkeypatch.setenv("REDIS_URL", dags_redis_url)

    return _use


def train_with_cli_path(home: Path, data: Path) -> dict[str, Any]:
    """`churnops train --data` (pipeline.run.run_training) in `home`, isolated from the caller's stores."""
    from churnops.settings import load_settings
    from pipeline.run import run_training

    with pytest.MonkeyPatch.context() as mp:
        for var in ISOLATED_ENV:
            mp.delenv(var, raising=False)
        return run_training(load_settings(home=home), data)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose pipeline ran once through the CLI path (`churnops train --data`): a champion exists."""
    home = make_project(tmp_path_factory.mktemp("trained") / "home")
    report = train_with_cli_path(home, home / "incoming" / "customers.csv")
    assert report.get("promotion", {}).get("promoted"), report
    yield home


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


@pytest.fixture(scope="session")
def gaps_trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose champion was trained (CLI path) on a table with gaps: blank and whitespace-only cells in
    the columns of tests.conftest.GAP_POLICIES, imputed by the policies of params.yaml schema.missing. Its
    gold layer keeps the gaps."""
    from churnops.settings import load_settings
    from tests.conftest import GAP_POLICIES, table_with_gaps

    home = make_project(tmp_path_factory.mktemp("gaps") / "home",
                        {"schema": {"missing": GAP_POLICIES}, "train": {"candidates": ["xgboost"]}})
    data = table_with_gaps(load_settings(home=home, env={}).schema, home / "incoming" / "gaps.csv")
    report = train_with_cli_path(home, data)
    assert report.get("promotion", {}).get("promoted"), report
    return home


def _scoring_copy(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ISOLATED_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    shutil.copytree(trained, home, symlinks=True)
    # the copy's registry still points at the trained home's MLflow store (absolute artifact paths)
    return home


@pytest.fixture
def scoring_home(trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained home (champion + gold layer) that this test may write scores into."""
    return _scoring_copy(trained_home, tmp_path, monkeypatch)


@pytest.fixture
def gaps_scoring_home(gaps_trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the home trained on a table with gaps, whose gold layer keeps them."""
    return _scoring_copy(gaps_trained_home, tmp_path, monkeypatch)


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
