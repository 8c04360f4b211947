"""Fixtures for the transactional source: settings, one generated retailer per session, DuckDB connections."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from churnops.settings import TransactionSettings
from churnops.transactions.generate import RetailerProfile, generate_to_file

NOW = datetime(2026, 1, 1)  # "now" of the validation runs: after every generated date
CUSTOMERS = 800


@pytest.fixture(scope="session")
def cfg() -> TransactionSettings:
    return TransactionSettings(rules={"min_rows": 100})


@pytest.fixture(scope="session")
def raw_csv(tmp_path_factory: pytest.TempPathFactory, cfg: TransactionSettings) -> Path:
    """800 customers' invoice lines, seed 7 (generated once per session)."""
    out = tmp_path_factory.mktemp("raw") / "transactions.csv"
    generate_to_file(out, cfg.columns, profile=RetailerProfile(customers=CUSTOMERS), seed=7)
    return out


@pytest.fixture(scope="session")
def raw_frame(raw_csv: Path) -> pd.DataFrame:
    return pd.read_csv(raw_csv, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture
def write_raw(tmp_path: Path, raw_frame: pd.DataFrame) -> Callable[..., Path]:
    """Write an edited copy of the generated lines: ``write_raw(edit)`` with ``edit(frame) -> frame``."""

    def _write(edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None, name: str = "edited.csv") -> Path:
        frame = raw_frame.copy()
        if edit is not None:
            frame = edit(frame)
        path = tmp_path / name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    return _write
