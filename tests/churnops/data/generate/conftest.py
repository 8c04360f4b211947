"""Fixtures for the synthetic-data tests: the configured schema and one generated table shared by a module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from churnops.settings import SchemaSettings, load_settings

REPO = Path(__file__).resolve().parents[4]
REAL_DATA = REPO.parent / "shared" / "data" / "BankChurners.csv"
FIDELITY_ROWS = 20_000


@pytest.fixture(scope="session")
def schema() -> SchemaSettings:
    return load_settings(home=REPO, env={}).schema


@pytest.fixture(scope="session")
def real_frame(schema: SchemaSettings) -> pd.DataFrame:
    if not REAL_DATA.is_file():
        pytest.skip(f"reference data not present at {REAL_DATA}")
    return pd.read_csv(REAL_DATA).drop(columns=schema.drop_columns)


@pytest.fixture(scope="session")
def synthetic(schema: SchemaSettings) -> pd.DataFrame:
    """20,000 rows from the packaged calibration, seed 11 (generated once per session)."""
    from churnops.data.generate import generate

    return generate(schema, FIDELITY_ROWS, seed=11)


def _churned(frame: pd.DataFrame, schema: SchemaSettings) -> pd.Series:
    return frame[schema.target.column] == schema.target.positive


@pytest.fixture(scope="session")
def churned() -> Callable[[pd.DataFrame, SchemaSettings], pd.Series]:
    """`churned(frame, schema)`: the rows labelled as churners."""
    return _churned
