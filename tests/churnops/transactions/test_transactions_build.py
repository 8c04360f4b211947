"""Raw file -> customer table: bad input stops the run naming what is wrong, and leaves the files as they
were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churnops.settings import TransactionSettings
from churnops.transactions.build import TransactionBuildError, build_customer_table_from_raw
from tests.churnops.transactions.conftest import NOW

CHURNOPS = Path(sys.executable).parent / "churnops"


@pytest.fixture
def built(raw_csv: Path, cfg: TransactionSettings, tmp_path: Path) -> dict[str, Path]:
    paths = {"clean": tmp_path / "clean.parquet", "out": tmp_path / "customers.parquet",
             "reports": tmp_path / "reports"}
    result = build_customer_table_from_raw(raw_csv, cfg, report_dir=paths["reports"],
                                           clean_out=paths["clean"], out=paths["out"], now=NOW)
    assert len(result.table) > 1000 and result.report.ok
    table = pd.read_parquet(paths["out"])
    assert list(table.columns[:2]) == ["customer_id", "cutoff"] and table.columns[-1] == "churned"
    assert result.to_dict()["cutoffs"]["holdout"] == str(result.plan.holdout)
    return paths


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_columns", "the quantity column is missing"),
        ("future_dates", "future_date"),
        ("long_horizon", r"horizon_days \(900\) is longer than the history"),
    ],
)
def test_bad_input_stops_naming_it_and_leaves_the_previous_files(
        case: str, message: str, built: dict[str, Path], write_raw, cfg: TransactionSettings) -> None:
    before = {name: path.read_bytes() for name, path in built.items() if path.is_file()}
    raw = {
        "wrong_columns": lambda: write_raw(lambda f: f.drop(columns=["Quantity"])),
        "future_dates": lambda: write_raw(lambda f: f.assign(InvoiceDate=f["InvoiceDate"].where(
            f.index != 5, "2031-01-01 09:00:00"))),
        "long_horizon": lambda: write_raw(),
    }[case]()
    bad_cfg = cfg.model_copy(update={"horizon_days": 900}) if case == "long_horizon" else cfg
    with pytest.raises(TransactionBuildError, match=message):
        build_customer_table_from_raw(raw, bad_cfg, report_dir=built["reports"], clean_out=built["clean"],
                                      out=built["out"], now=NOW)
    after = {name: path.read_bytes() for name, path in built.items() if path.is_file()}
    assert after == before


def test_cli_builds_the_table_and_refuses_bad_input(raw_csv: Path, write_raw, tmp_path: Path) -> None:
    home = Path(__file__).resolve().parents[3]

    def run(raw: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHURNOPS), "--home", str(home), "data", "build-customers", "--raw", str(raw),
             "--out", str(tmp_path / "customers.parquet"), "--clean-out", str(tmp_path / "clean.parquet")],
            capture_output=True, text=True, timeout=180, check=False,
            env={**__import__("os").environ, "CHURNOPS_HOME": str(tmp_path)})

    good = run(raw_csv)
    assert good.returncode == 0, good.stderr
    assert "hold-out 2011-09-11" in good.stdout
    bad = run(write_raw(lambda f: f.rename(columns={"Invoice": "InvoiceNo"})))
    assert bad.returncode == 1
    assert "the invoice column is missing" in bad.stderr and "InvoiceNo" in bad.stderr


def test_current_features_are_every_customers_as_of_the_day_after_the_last_line(
        raw_csv: Path, raw_frame: pd.DataFrame, cfg: TransactionSettings) -> None:
    from churnops.settings import SchemaSettings
    from churnops.transactions.build import current_customer_table
    from churnops.transactions.cutoffs import CutoffPlan
    from churnops.transactions.features import FEATURES, features_duckdb
    from churnops.transactions.validate import check_transactions, connect

    schema = SchemaSettings(id_column="customer_id", time_column="cutoff",
                            target={"column": "status", "positive": "churned", "negative": "active"},
                            numeric={f: {} for f in FEATURES}, categorical={})
    current = current_customer_table(raw_csv, cfg, schema, now=NOW)

    last = pd.to_datetime(raw_frame["InvoiceDate"]).max().date()
    assert set(current["cutoff"]) == {(last + pd.Timedelta(days=1)).isoformat()}
    assert "status" not in current.columns and not current["customer_id"].duplicated().any()
    con = connect()
    check_transactions(con, raw_csv, cfg, now=NOW)
    day = last + pd.Timedelta(days=1)
    expected = features_duckdb(con, CutoffPlan((), day, day, day), cfg)
    assert list(current["customer_id"]) == list(expected["customer_id"])
    pd.testing.assert_frame_equal(current[list(FEATURES)], expected[list(FEATURES)])
    assert (current["recency_days"] > 0).all()
