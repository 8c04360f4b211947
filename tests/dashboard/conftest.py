"""Fixtures for the dashboard tests: a project home whose marts were written by the core's own refresh from
a real (small, quickly fitted) model and outlier detector on generated customers; no MLflow training."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROWS = 3000


@pytest.fixture(scope="session")
def model() -> SimpleNamespace:
    """A logistic-regression pipeline (the project's FeatureEncoder first) and an outlier detector."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from churnops.data.generate import generate
    from churnops.features import FeatureEncoder
    from churnops.outliers import fit_outlier_detector
    from churnops.scoring import Scorer
    from churnops.settings import load_settings

    schema = load_settings(home=REPO).schema
    train = generate(schema, 4000, seed=11)
    y = (train[schema.target.column] == schema.target.positive).astype(int)
    pipe = Pipeline([("encode", FeatureEncoder.from_schema(schema)), ("scale", StandardScaler()),
                     ("model", LogisticRegression(max_iter=2000))])
    pipe.fit(train[schema.feature_columns], y)
    detector = fit_outlier_detector(train[schema.feature_columns], schema, seed=3)
    customers = generate(schema, ROWS, seed=12)
    return SimpleNamespace(scorer=Scorer(pipe), detector=detector, customers=customers, schema=schema)


@pytest.fixture
def make_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A home with the repo's params.yaml (plus `analytics` overrides); CHURNOPS_* point at it."""

    def _make(analytics: dict[str, Any] | None = None, database_url: str | None = None) -> Path:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["analytics"].update(analytics or {})
        (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for var in ("CHURNOPS_PARAMS", "MLFLOW_TRACKING_URI", "CHURNOPS_ARTIFACT_ROOT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("CHURNOPS_HOME", str(home))
        if database_url:
            monkeypatch.setenv("CHURNOPS_DATABASE_URL", database_url)
        else:
            monkeypatch.delenv("CHURNOPS_DATABASE_URL", raising=False)
        return home

    return _make


def write_run(home: Path, model: SimpleNamespace, customers: pd.DataFrame, run_id: str,
              minutes: int = 0) -> Any:
    """Score `customers` and write the run's fact and marts with the core's refresh (batch scoring's path)."""
    from churnops.analytics.marts import RunMeta, refresh
    from churnops.settings import load_settings
    from pipeline.batch import score_frame

    settings = load_settings(home=home)
    frame = customers[[model.schema.id_column, *model.schema.feature_columns]].reset_index(drop=True)
    scores = score_frame(settings, SimpleNamespace(scorer=model.scorer), model.detector, frame, 1000)
    meta = RunMeta(run_id, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes), "7", "abc123")
    return refresh(settings, meta, frame, scores, model.scorer)


def riskier(customers: pd.DataFrame, n: int) -> pd.DataFrame:
    """`customers` with the first `n` made to look like churners."""
    out = customers.copy()
    idx = out.index[:n]
    out.loc[idx, "Total_Trans_Ct"] = 15
    out.loc[idx, "Total_Ct_Chng_Q4_Q1"] = 0.3
    out.loc[idx, "Contacts_Count_12_mon"] = 5
    out.loc[idx, "Months_Inactive_12_mon"] = 5
    return out


def expected(model: SimpleNamespace, customers: pd.DataFrame) -> pd.DataFrame:
    """Probabilities and levels computed here, for the figures the pages must show."""
    from churnops.settings import load_settings

    levels = load_settings(home=REPO).params.serving.risk_levels
    p = model.scorer.predict_proba_frame(customers[model.schema.feature_columns])
    return customers.assign(p=p, level=[levels.level(x) for x in p],
                            loss=p * customers["Total_Trans_Amt"].to_numpy(dtype=np.float64))
