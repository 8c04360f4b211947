"""Project homes with a real pipeline, shared by the pipeline and DAG tests (registered for every tier by
tests/conftest.py's ``pytest_plugins``): a generated table in a home with fast budgets, a home trained once
through the CLI path (`churnops train --data`), copies of it to score into, and a Redis of the session's own.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import FAST_TRAIN, REPO, deep_merge

ROWS = 1500

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


# -- what a batch scoring wrote ------------------------------------------------------------------
def scores_in(settings, run_id: str | None = None) -> pd.DataFrame:
    """The batch-scores table of `settings` (one run's rows with `run_id`)."""
    import sqlalchemy as sa

    engine = sa.create_engine(settings.database_url)
    try:
        query = f"SELECT * FROM {settings.params.batch.table}"
        frame = pd.read_sql(sa.text(query), engine)
    finally:
        engine.dispose()
    return frame if run_id is None else frame[frame.run_id == run_id]


def assert_gaps_scored(settings, scores: pd.DataFrame) -> None:
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
