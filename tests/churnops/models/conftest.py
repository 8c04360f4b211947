"""Fixtures for the model library, tracking and registry tests.

- `gold_frames(n, seed, signal)`: synthetic gold-layer frames (id, schema features, `churn`) made with numpy,
  so these tests run without the reference table.
- `model_home(...)`: a project home with params.yaml whose training budget is FAST_TRAIN (search spaces
  replaced, not merged into the real ones) and a pre-migrated MLflow SQLite store (creating one costs ~5 s,
  copying the template costs milliseconds).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import FAST_TRAIN, REAL_DATA, REPO, deep_merge  # noqa: F401 (re-exported for tests)

LABEL = "churn"


def base_params() -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = dict(params["train"])
    train.update(copy.deepcopy(FAST_TRAIN))  # replace the spaces wholesale: merging would mix spec forms
    params["train"] = train
    return params


def gold_frame(schema: Any, n: int, seed: int, *, signal: float = 1.0) -> pd.DataFrame:
    """A synthetic gold frame in `schema`; churn depends on a few features (strength `signal`)."""
    rng = np.random.default_rng(seed)
    first_id = 700_000_000 + seed * 100_000
    data: dict[str, Any] = {schema.id_column: np.arange(first_id, first_id + n)}
    for col, spec in schema.numeric.items():
        low = spec.min if spec.min is not None else 0.0
        high = spec.max if spec.max is not None else low + 100.0
        high = min(high, low + 20_000.0) if high - low > 20_000 else high
        if spec.integer:
            data[col] = rng.integers(int(low), int(high) + 1, size=n)
        else:
            data[col] = rng.uniform(low, high, size=n).round(3)
    for col, cats in schema.categorical.items():
        data[col] = rng.choice(cats, size=n)
    frame = pd.DataFrame(data)

    def z(col: str) -> np.ndarray:
        if col not in frame:
            return np.zeros(n)
        v = frame[col].to_numpy(dtype=float)
        return (v - v.mean()) / (v.std() or 1.0)

    logit = -1.8 + signal * (-1.6 * z("Total_Trans_Ct") + 0.9 * z("Months_Inactive_12_mon")
                             - 0.8 * z("Total_Revolving_Bal") + 0.6 * (frame.get("Gender") == "F"))
    frame[LABEL] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database, created once per test session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def make_model_home(mlflow_template: Path) -> Callable[..., Any]:
    """make(root, overrides=None, params_name="params.yaml") -> Settings for a home under `root`.

    The environment is ignored (explicit env={}), so fixtures of any scope can use it.
    """
    from churnops.settings import load_settings

    def _make(root: Path, overrides: dict[str, Any] | None = None, params_name: str = "params.yaml"):
        root.mkdir(parents=True, exist_ok=True)
        params = deep_merge(base_params(), overrides or {})
        for candidate, space in ((overrides or {}).get("train", {}).get("search_spaces") or {}).items():
            params["train"]["search_spaces"][candidate] = copy.deepcopy(space)  # replace, never merge
        (root / params_name).write_text(yaml.safe_dump(params, sort_keys=False))
        db = root / "mlflow" / "mlflow.db"
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mlflow_template, db)
        return load_settings(home=root, params_path=root / params_name, env={})

    return _make


@pytest.fixture
def model_settings(tmp_path: Path, make_model_home: Callable[..., Any]):
    """Settings of a fresh home with FAST_TRAIN budgets and an empty MLflow store."""
    return make_model_home(tmp_path / "home")


@pytest.fixture(scope="session")
def synthetic_split() -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    """split(schema, n=1200, seed=0, signal=1.0) -> stratified (train, test) gold frames (test 25%)."""

    def _split(schema: Any, n: int = 1200, seed: int = 0, signal: float = 1.0):
        from sklearn.model_selection import train_test_split

        frame = gold_frame(schema, n, seed, signal=signal)
        train, test = train_test_split(frame, test_size=0.25, stratify=frame[LABEL], random_state=seed)
        return train.reset_index(drop=True), test.reset_index(drop=True)

    return _split


def real_gold(schema: Any, path: Path) -> pd.DataFrame:
    """The reference table as a gold frame: leak columns dropped, target as churn 0/1."""
    frame = pd.read_csv(path).drop(columns=list(schema.drop_columns))
    target = frame.pop(schema.target.column)
    frame[LABEL] = (target == schema.target.positive).astype(int)
    return frame
