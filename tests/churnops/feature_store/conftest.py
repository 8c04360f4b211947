"""Feature-store and prediction-log fixtures: settings, a small gold layer, stores on the test Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest


@pytest.fixture
def settings(settings_factory: Callable[..., Any], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REDIS_URL", redis_url)
    return settings_factory({"feature_store": {"namespace": "fs-test", "chunk_size": 64},
                             "serving": {"prediction_log_maxlen": 1000}})


@pytest.fixture
def gold(settings: Any) -> pd.DataFrame:
    """Gold layer rows: id, feature columns and the label (which must never reach Redis)."""
    from churnops.data.generate import generate

    schema = settings.schema
    table = generate(schema, 300, seed=3)
    frame = table[[schema.id_column, *schema.feature_columns]].copy()
    frame["churn"] = (table[schema.target.column] == schema.target.positive).astype("int8")
    return frame


@pytest.fixture
def store(settings: Any) -> Any:
    from churnops.feature_store import FeatureStore

    return FeatureStore.from_settings(settings)


@pytest.fixture
def record_of(settings: Any) -> Callable[[pd.Series], dict[str, Any]]:
    """A gold row as the typed {column: value} the store must give back."""
    schema = settings.schema

    def _record(row: pd.Series) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col, spec in schema.numeric.items():
            out[col] = int(row[col]) if spec.integer else float(row[col])
        for col in schema.categorical:
            out[col] = str(row[col])
        return out

    return _record
